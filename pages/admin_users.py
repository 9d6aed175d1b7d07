"""Admin · Users: who can log in, with which role."""

import streamlit as st

from studio import ui
from studio.models import Role
from studio.users import UserError, create_user, list_users

ui.require_user(Role.admin)

st.title("Users")

st.subheader("Add a user")
with st.form("create_user", clear_on_submit=True):
    username = st.text_input("Username")
    display_name = st.text_input("Display name")
    email = st.text_input("E-mail")
    password = st.text_input("Initial password", type="password", help="At least 8 characters.")
    role = st.selectbox("Role", [r.value for r in Role], index=1)
    if st.form_submit_button("Create user"):
        try:
            with ui.db_write_session() as session:
                created = create_user(
                    session=session,
                    username=username,
                    password=password,
                    email=email,
                    display_name=display_name or None,
                    role=Role(role),
                )
            st.success(f"Created {created.username} ({created.role.value}).")
        except UserError as exc:
            st.error(str(exc))

st.subheader("All users")
with ui.db_session() as session:
    users = list_users(session=session)
st.dataframe(
    [
        {
            "Username": u.username,
            "Name": u.display_name,
            "E-mail": u.email,
            "Role": u.role.value,
            "Plan": u.plan,
            "Active": u.is_active,
            "Created": u.created_at,
        }
        for u in users
    ],
    hide_index=True,
)
