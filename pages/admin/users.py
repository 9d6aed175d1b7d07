"""Admin · Users: who can log in, with which role, plan and team; every change goes to the audit log."""

import streamlit as st

from studio.accounts import admin
from studio.accounts.users import list_users
from studio.billing.plans import PLANS
from studio.db.tables import Plan, Role
from studio.web import app, auth, refusals

actor = auth.require_user(Role.admin)

st.title("Users")

with app.db_session() as session:
    teams = {team.id: team.name for team in admin.list_teams(session=session)}


def team_name(team_id: int | None) -> str:
    return "No team" if team_id is None else teams[team_id]


st.subheader("Add a user")
with st.form("create_user", clear_on_submit=True):
    username = st.text_input("Username")
    display_name = st.text_input("Display name")
    email = st.text_input("E-mail")
    password = st.text_input("Initial password", type="password", help="At least 8 characters.")
    role_col, plan_col, team_col = st.columns(3)
    role = role_col.selectbox("Role", list(Role), index=1)
    plan = plan_col.selectbox("Plan", list(Plan), format_func=lambda p: PLANS[p].label)
    team_id = team_col.selectbox("Team", [None, *teams], format_func=team_name)
    if st.form_submit_button("Create user"):
        created = refusals.admin_action(
            admin.create_user,
            actor=actor,
            username=username,
            password=password,
            email=email,
            display_name=display_name or None,
            role=role,
            plan=plan,
            team_id=team_id,
        )
        if created is not None:
            st.success(f"Created {created.username} ({created.role.value}).")

with app.db_session() as session:
    users = list_users(session=session)
by_id = {user.id: user for user in users}

st.subheader("Change a user")
chosen = st.selectbox(
    "User",
    list(by_id),
    format_func=lambda i: (
        f"{by_id[i].username} · {by_id[i].role.value} · {PLANS[by_id[i].plan].label} · "
        f"{team_name(by_id[i].team_id)}{'' if by_id[i].is_active else ' · deactivated'}"
    ),
    key="manage_user",
)
target = by_id[chosen]
if target.id == actor.id:
    st.caption("This is you: another admin changes your role, plan, active state and credits.")
role_col, plan_col, team_col = st.columns(3)
with role_col.form("set_role"):
    role = st.selectbox("Role", list(Role), index=list(Role).index(target.role))
    if st.form_submit_button("Set role") and refusals.admin_action(
        admin.set_role, actor=actor, user_id=target.id, role=role
    ):
        st.success(f"{target.username} is now {role.value}.")
with plan_col.form("set_plan"):
    plan = st.selectbox("Plan", list(Plan), index=list(Plan).index(target.plan), format_func=lambda p: PLANS[p].label)
    if st.form_submit_button("Set plan") and refusals.admin_action(
        admin.set_plan, actor=actor, user_id=target.id, plan=plan
    ):
        st.success(f"{target.username} is on {PLANS[plan].label} now.")
with team_col.form("set_team"):
    options = [None, *teams]
    team_id = st.selectbox("Team", options, index=options.index(target.team_id), format_func=team_name)
    pool = st.checkbox("May use the team pool", value=target.can_use_team_pool, help="When their own credits run out.")
    if st.form_submit_button("Set team") and refusals.admin_action(
        admin.set_team, actor=actor, user_id=target.id, team_id=team_id, can_use_team_pool=pool
    ):
        st.success(f"{target.username}: {team_name(team_id)}{', may use its pool' if pool and team_id else ''}.")

active_col, password_col, sessions_col = st.columns(3)
label = "Reactivate" if not target.is_active else "Deactivate"
if active_col.button(f"{label} {target.username}", key="toggle_active") and refusals.admin_action(
    admin.set_active, actor=actor, user_id=target.id, active=not target.is_active
):
    st.success(f"{target.username} is {'deactivated' if target.is_active else 'active again'}.")
if password_col.button(f"Reset {target.username}'s password", key="reset_password"):
    temporary = admin.temporary_password()
    if refusals.admin_action(admin.reset_password, actor=actor, user_id=target.id, new_password=temporary):
        st.success(f"New password for {target.username}: `{temporary}` — shown once; hand it over securely.")

if sessions_col.button(f"Sign {target.username} out everywhere", key="revoke_sessions"):
    revoked = refusals.admin_action(admin.revoke_sessions, actor=actor, user_id=target.id)
    if revoked is not None:
        st.success(f"{target.username}: {revoked} session{'s' if revoked != 1 else ''} ended.")
st.caption(
    "Deactivating, a role change and a password reset sign the user out everywhere too; reactivating revives none."
)

st.subheader("All users")
with app.db_session() as session:
    users = list_users(session=session)
st.dataframe(
    [
        {
            "Username": u.username,
            "Name": u.display_name,
            "E-mail": u.email,
            "Role": u.role.value,
            "Plan": PLANS[u.plan].label,
            "Team": team_name(u.team_id),
            "Team pool": u.can_use_team_pool,
            "Active": u.is_active,
            "Created": u.created_at,
        }
        for u in users
    ],
    hide_index=True,
)
