"""Signing in and out: the login form, the signed-in user (checked against the database on every run, roles
included), role checks, the user's own password and sessions, and a browser session's form state that must not
outlive its user.

Who is signed in is a server-side session (studio.accounts.sessions): its token sits in this browser session's
state once signed in here, and in a cookie for the next visits (studio.web.cookies). streamlit-authenticator draws
the login form; the password check behind it is studio.accounts.signin (throttled, audited), and its own JWT
cookie is not used.

Where a client comes from (per-client throttling and the client hint of a session): the address of the
connection (`st.context.ip_address`; None for a connection from this machine), or, with STUDIO_CLIENT_IP_HEADER
set, the last address in that header (what the nearest proxy saw; earlier ones a client can forge).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
import streamlit_authenticator as stauth
from streamlit_authenticator.controllers import AuthenticationController

from studio.accounts.sessions import (
    Client,
    SessionPolicy,
    cookie_value,
    end_session,
    session_id,
    session_user,
    sign_out_everywhere,
    token_from_cookie,
)
from studio.accounts.signin import change_password, sign_in
from studio.billing.plans import allocate_monthly
from studio.db.tables import Role, User, utcnow
from studio.web import cookies, refusals
from studio.web.app import bootstrap_studio, db_session, db_write_session, settings

SESSION_TOKEN_STATE = "studio.session_token"  # where a browser session keeps its token


def _policy() -> SessionPolicy:
    return SessionPolicy.from_settings(settings())


def client() -> Client:
    """Where this browser session connects from (see the module docstring) and its browser."""
    headers = st.context.headers
    address = _text(st.context.ip_address)
    if (header := settings().client_ip_header) is not None:
        address = (_text(headers.get(header)) or "").split(",")[-1].strip() or address
    return Client(address=address, user_agent=_text(headers.get("User-Agent")) or "")


def _text(value: object) -> str | None:
    # Under AppTest there is no connection: its context answers with stand-in objects.
    return value if isinstance(value, str) else None


def _token() -> str | None:
    """This browser session's session token: signed in here, or the cookie the browser sent."""
    token = st.session_state.get(SESSION_TOKEN_STATE)
    if token is None:
        token = token_from_cookie(st.context.cookies.get(settings().cookie_name), key=bootstrap_studio().cookie_key)
    return token


def _keep(token: str) -> None:
    """Use `token` from now on here, and have the browser keep its cookie for the next visits."""
    st.session_state[SESSION_TOKEN_STATE] = token
    value = cookie_value(token, key=bootstrap_studio().cookie_key)
    cookies.store(settings().cookie_name, value, max_age_s=int(_policy().lifetime.total_seconds()))


def _forget() -> None:
    """Nobody is signed in here any more: forget the token, delete the cookie, clear the forms."""
    st.session_state.pop(SESSION_TOKEN_STATE, None)
    cookies.delete(settings().cookie_name)
    forget_other_users_state(None)


def current_user() -> User | None:
    """The signed-in, still active user of a valid session, read from the database (roles come from there)."""
    token = _token()
    if token is None:
        return None
    with db_session() as session:
        user = session_user(session=session, token=token, now=utcnow(), policy=_policy())
    if user is None:
        st.session_state.pop(SESSION_TOKEN_STATE, None)  # revoked or expired: the cookie, if any, says no more
    return user


def current_session_id() -> str | None:
    token = _token()
    return None if token is None else session_id(token)


class _LoginForm(stauth.Authenticate):
    """streamlit-authenticator's login form, with `check(username, password)` behind it and no cookie of its own.

    Not `super().__init__`: that mounts extra-streamlit-components' CookieManager for the authenticator's JWT
    cookie, an iframe that reruns the app once it has loaded (clearing what was typed into the form). The
    attributes set here are all that `login` reads (streamlit-authenticator 0.4.2, pinned).
    """

    def __init__(self, check: Callable[[str, str], bool], secret_key: str) -> None:
        self.attrs = {"login_sleep_time": 0}
        self.path = self.api_key = None
        self.secret_key = secret_key
        self.cookie_controller = _NoCookie()
        self.authentication_controller = AuthenticationController({"usernames": {}}, auto_hash=False)
        self.credentials = self.authentication_controller.authentication_model.credentials
        self.authentication_controller.authentication_model.check_credentials = check


class _NoCookie:
    """The authenticator's cookie controller, doing nothing: sessions are the studio's (studio.accounts.sessions)."""

    def get_cookie(self) -> None:
        return None

    def set_cookie(self) -> None:
        pass

    def delete_cookie(self) -> None:
        pass


def login_page() -> None:
    """The login form, with the first-run hint; a refused sign-in shows why (and until when, when throttled).
    Signed in, the app starts over without the form."""
    # The form's state from a session that has since ended (signed out elsewhere, expired) must not hide it.
    st.session_state["authentication_status"] = None
    st.title("Img2Img Studio")

    def check(username: str, password: str) -> bool:
        with db_write_session() as session:
            user, token = sign_in(
                session=session, username=username, password=password, client=client(), now=utcnow(), policy=_policy()
            )
        form.credentials["usernames"][username] = {
            "email": user.email,
            "first_name": user.display_name,
            "last_name": "",
            "roles": [user.role.value],
        }
        _keep(token)
        return True

    form = _LoginForm(check, bootstrap_studio().cookie_key)
    refusals.attempt(lambda: form.login(location="main", key="studio_login"))
    st.caption(
        "First run? The admin password was printed once in the console that started the studio "
        "(or set it beforehand with STUDIO_ADMIN_PASSWORD)."
    )
    if st.session_state.get("authentication_status"):
        st.rerun()


def log_out() -> None:
    """Sign out (this browser's session is revoked, whatever copies of its cookie exist) and start over at the
    login form, leaving nothing of this user's forms behind."""
    if (token := _token()) is not None:
        with db_write_session() as session:
            end_session(session=session, token=token, now=utcnow())
    _forget()
    st.rerun()


def log_out_everywhere(user: User) -> None:
    """Revoke all of the user's sessions, this one too, and start over at the login form."""
    with db_write_session() as session:
        sign_out_everywhere(session=session, user=user, now=utcnow())
    _forget()
    st.rerun()


def change_own_password(user: User, *, current: str, new: str, repeated: str) -> bool:
    """The user's own password change (refusals shown); on success this browser stays signed in, in a new session,
    and every other session of the user is revoked."""
    if new != repeated:
        st.error("The new password and its repetition differ; nothing changed.")
        return False

    def change() -> str:
        with db_write_session() as session:
            return change_password(
                session=session,
                user=user,
                current_password=current,
                new_password=new,
                client=client(),
                now=utcnow(),
                policy=_policy(),
            )

    token = refusals.attempt(change)
    if token is None:
        return False
    _keep(token)
    return True


# What streamlit-authenticator keeps in the session (its login state), this browser's session token and the
# cookie waiting to be stored; everything else in a browser session's state belongs to whoever is signed in.
_KEPT_STATE = frozenset(
    {"authentication_status", "username", "name", "email", "roles", "logout", "password_hint", SESSION_TOKEN_STATE}
    | cookies.STATE_KEYS
)
_STATE_OWNER = "studio.state_owner"


def forget_other_users_state(user: User | None) -> None:
    """Clear the forms, uploads and jobs shown in this browser session when they belong to someone else:
    after a logout (`user` None), the next person at this browser sees empty forms."""
    owner = user.username if user is not None else None
    if st.session_state.get(_STATE_OWNER, owner) != owner:
        for key in list(st.session_state):
            if key not in _KEPT_STATE:
                del st.session_state[key]
    st.session_state[_STATE_OWNER] = owner


def refresh_plan_credits(user: User) -> None:
    """Give a Pro user this month's credits at their first page view of a session (once a month)."""
    if st.session_state.get("plan_credits_checked") == user.id:
        return
    with db_write_session() as session:
        allocate_monthly(session=session, user=user, now=utcnow())
        session.commit()
    st.session_state["plan_credits_checked"] = user.id


def require_user(role: Role | None = None) -> User:
    """Stop the page unless someone is logged in (and has `role`, when given)."""
    user = current_user()
    if user is None:
        st.warning("Please log in.")
        st.stop()
    if role is not None and user.role is not role:
        st.error("This page is for administrators only.")
        st.stop()
    return user
