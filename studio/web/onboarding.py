"""The getting-started panel: on an admin's first sign-in, the few steps that turn a fresh install into a studio for a
team, until they close it."""

from __future__ import annotations

import streamlit as st

from studio.accounts.users import dismiss_getting_started
from studio.db.tables import Role, User
from studio.web import app


def getting_started(user: User) -> None:
    """Shown to an admin above every page until they close it (remembered on their account)."""
    if user.role is not Role.admin or user.getting_started_dismissed:
        return
    with st.container(border=True):
        st.markdown("**Getting started** — you are the studio's admin. a few steps make it your team's:")
        st.page_link("pages/admin/teams.py", label="1. Create a team", icon=":material/groups:")
        st.page_link("pages/admin/users.py", label="2. Add its users (and give them a plan)", icon=":material/group:")
        st.page_link("pages/admin/teams.py", label="3. Set its monthly budget", icon=":material/savings:")
        st.page_link("pages/admin/credits.py", label="4. Give credits to users or its pool", icon=":material/toll:")
        if app.settings().uses_preview_model:
            st.markdown(
                "5. Point the studio at a real model: set `STUDIO_MODEL` to a Hugging Face id or a local diffusers "
                "folder and restart (README → Real models). Until then results are coloured noise."
            )
        st.caption(
            "On the server, `python -m studio admin grant|plan|role|create-user|reset-password` does the same as the "
            "operator (`--help` for each)."
        )
        st.button("Got it, don't show again", key="getting_started.dismiss", on_click=_dismiss, args=(user.id,))


def _dismiss(user_id: int) -> None:
    with app.db_write_session() as session:
        dismiss_getting_started(session=session, user_id=user_id)
