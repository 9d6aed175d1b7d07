"""The Account page's sign-in part: where you are signed in (with *Sign out everywhere*) and changing your password."""

from __future__ import annotations

import streamlit as st

from studio.accounts.sessions import SessionPolicy, active_sessions
from studio.accounts.users import MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH
from studio.db.tables import User, utcnow
from studio.web import auth
from studio.web.app import db_session, settings

_CHANGED = "account.password_changed"


def signed_in_sessions(user: User) -> None:
    """The user's valid sessions, this browser's marked, and the button that ends them all."""
    policy, now = SessionPolicy.from_settings(settings()), utcnow()
    with db_session() as session:
        rows = active_sessions(session=session, user_id=user.id, now=now, policy=policy)
    this_one = auth.current_session_id()
    st.dataframe(
        [
            {
                "This browser": row.id == this_one,
                "Signed in": row.created_at,
                "Last seen": row.last_seen_at,
                "Ends at the latest": min(row.expires_at, row.last_seen_at + policy.idle),
                "Address": row.client_address or "this machine",
                "Browser": row.user_agent,
            }
            for row in rows
        ],
        hide_index=True,
    )
    st.caption(
        f"A session ends after {policy.idle} without a page view, {policy.lifetime.days} days after signing in at the "
        "latest, when you log out there, and for all of them when your password or role changes."
    )
    if st.button("Sign out everywhere", icon=":material/logout:", key="account.sign_out_everywhere"):
        auth.log_out_everywhere(user)  # this browser too: it starts over at the login form


def password_form(user: User) -> None:
    """Change your own password: the current one is required; other browsers are signed out, this one stays."""
    if st.session_state.pop(_CHANGED, False):
        st.success("Password changed. Every other browser signed in as you is signed out.")
    with st.form("account.password", clear_on_submit=True):
        current = st.text_input("Current password", type="password")
        new = st.text_input(
            "New password",
            type="password",
            help=f"{MIN_PASSWORD_LENGTH} characters to {MAX_PASSWORD_BYTES} bytes, no spaces at either end.",
        )
        repeated = st.text_input("New password again", type="password")
        if st.form_submit_button("Change password") and auth.change_own_password(
            user, current=current, new=new, repeated=repeated
        ):
            # Start over, so this browser stores its new session's cookie now (studio.web.cookies), then say so.
            st.session_state[_CHANGED] = True
            st.rerun()
