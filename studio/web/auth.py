"""Signing in and out: the login form, the signed-in user (read from the database, roles included), role checks,
and a browser session's form state that must not outlive its user.
"""

from __future__ import annotations

import streamlit as st
import streamlit_authenticator as stauth
from streamlit_authenticator.utilities import LoginError

from studio.accounts.bootstrap import BootstrapReport
from studio.accounts.users import authenticator_credentials, get_active_user
from studio.billing.plans import allocate_monthly
from studio.db.tables import Role, User, utcnow
from studio.web.app import db_session, db_write_session, settings

COOKIE_EXPIRY_DAYS = 7


def authenticator(report: BootstrapReport) -> stauth.Authenticate:
    """streamlit-authenticator over the users table; created once per script run."""
    with db_session() as session:
        credentials = authenticator_credentials(session=session)
    return stauth.Authenticate(
        credentials,
        settings().cookie_name,
        report.cookie_key,
        COOKIE_EXPIRY_DAYS,
        auto_hash=False,
        login_sleep_time=0,
    )


def login_form(authenticator: stauth.Authenticate) -> None:
    """The login form, with the first-run hint and a clear message for a wrong password."""
    if st.session_state.get("authentication_status"):
        # Logged in by cookie or session, but the account is gone or deactivated since.
        authenticator.logout(location="unrendered")
    st.title("Img2Img Studio")
    try:
        authenticator.login(location="main", key="studio_login")
    except LoginError:
        # The browser holds a login cookie of an account that is gone or deactivated: forget it (`logout`
        # makes the authenticator ignore the cookie for this session) and offer the form.
        st.session_state["logout"] = True
        authenticator.cookie_controller.delete_cookie()
        authenticator.login(location="main", key="studio_login")
    st.caption(
        "First run? The admin password was printed once in the console that started the studio "
        "(or set it beforehand with STUDIO_ADMIN_PASSWORD)."
    )
    if st.session_state.get("authentication_status") is False:
        st.error("Username or password is incorrect.")


def log_out(authenticator: stauth.Authenticate) -> None:
    """Sign out and start over at the login form, leaving nothing of this user's forms behind."""
    authenticator.logout(location="unrendered")
    forget_other_users_state(None)
    st.rerun()


# What streamlit-authenticator keeps in the session (its login state and cookie component); everything
# else in a browser session's state belongs to whoever is signed in.
_AUTHENTICATOR_STATE = frozenset(
    {"authentication_status", "username", "name", "email", "roles", "logout", "password_hint", "init"}
)
_STATE_OWNER = "studio.state_owner"


def forget_other_users_state(user: User | None) -> None:
    """Clear the forms, uploads and jobs shown in this browser session when they belong to someone else:
    after a logout (`user` None), the next person at this browser sees empty forms."""
    owner = user.username if user is not None else None
    if st.session_state.get(_STATE_OWNER, owner) != owner:
        for key in list(st.session_state):
            if key not in _AUTHENTICATOR_STATE:
                del st.session_state[key]
    st.session_state[_STATE_OWNER] = owner


def current_user() -> User | None:
    """The logged-in, still active user, read from the database (roles come from there)."""
    if not st.session_state.get("authentication_status"):
        return None
    with db_session() as session:
        return get_active_user(session=session, username=st.session_state.get("username"))


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
