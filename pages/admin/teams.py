"""Admin · Teams: teams, their members, and monthly budgets with an alert threshold."""

import streamlit as st

from studio.accounts import admin
from studio.accounts.users import list_users
from studio.billing.budgets import all_budget_statuses
from studio.db.tables import DEFAULT_ALERT_PERCENT, MAX_ALERT_PERCENT, MIN_ALERT_PERCENT, Role, utcnow
from studio.web import app, auth, budgets, refusals
from studio.web.text import plain

actor = auth.require_user(Role.admin)

st.title("Teams")

st.subheader("Add a team")
with st.form("create_team", clear_on_submit=True):
    name = st.text_input("Name")
    budget_col, alert_col = st.columns(2)
    budget = budget_col.number_input("Monthly budget (credits; 0 = none)", min_value=0, step=100, value=0)
    alert = alert_col.slider(
        "Alert at (% of the budget)",
        min_value=MIN_ALERT_PERCENT,
        max_value=MAX_ALERT_PERCENT,
        value=DEFAULT_ALERT_PERCENT,
    )
    if st.form_submit_button("Create team"):
        created = refusals.admin_action(
            admin.create_team, actor=actor, name=name, monthly_budget=budget or None, budget_alert_percent=alert
        )
        if created is not None:
            st.success(f"Created team {plain(created.name)}.")

with app.db_session() as session:
    statuses = all_budget_statuses(session=session, now=utcnow())
    users = list_users(session=session)
if not statuses:
    st.info("No teams yet.")
    st.stop()

st.subheader("Budgets this month")
for status in statuses:
    if status.alert:
        budgets.show_budget_alert(status)
members = {status.team_id: [u for u in users if u.team_id == status.team_id] for status in statuses}
st.dataframe(
    [
        {
            "Team": status.team_name,
            "Members": len(members[status.team_id]),
            "Budget": status.budget,
            "Spent": status.spent,
            "Used": f"{status.percent_used:.0f} %" if status.budget is not None else "—",
            "Alert at": f"{status.alert_percent} %",
            "State": "over budget" if status.exhausted else "alert" if status.alert else "ok",
        }
        for status in statuses
    ],
    hide_index=True,
)
st.caption(
    "Spent: the prices of the jobs the team's members submitted this month (UTC) that were not refunded, "
    "queued and running ones included. A job that would go over the budget is refused."
)

st.subheader("Change a team")
by_id = {status.team_id: status for status in statuses}
chosen = st.selectbox("Team", list(by_id), format_func=lambda i: by_id[i].team_name, key="manage_team")
team = by_id[chosen]
rename_col, budget_col = st.columns(2)
with rename_col.form("rename_team"):
    new_name = st.text_input("New name", value=team.team_name)
    if st.form_submit_button("Rename") and refusals.admin_action(
        admin.rename_team, actor=actor, team_id=team.team_id, name=new_name
    ):
        st.success(f"Renamed to {plain(new_name)}.")
with budget_col.form("set_budget"):
    budget = st.number_input("Monthly budget (credits; 0 = none)", min_value=0, step=100, value=team.budget or 0)
    alert = st.slider(
        "Alert at (% of the budget)",
        min_value=MIN_ALERT_PERCENT,
        max_value=MAX_ALERT_PERCENT,
        value=team.alert_percent,
    )
    if st.form_submit_button("Set budget") and refusals.admin_action(
        admin.set_team_budget,
        actor=actor,
        team_id=team.team_id,
        monthly_budget=budget or None,
        budget_alert_percent=alert,
    ):
        st.success(
            f"{plain(team.team_name)}: {f'{budget} credits a month' if budget else 'no budget'}, alert at {alert} %."
        )
with st.form("set_members"):
    by_user = {user.id: user for user in users}
    chosen_members = st.multiselect(
        "Members",
        list(by_user),
        default=[user.id for user in members[team.team_id]],
        format_func=lambda i: (
            by_user[i].username
            + (
                f" (now in {by_id[by_user[i].team_id].team_name})"
                if by_user[i].team_id not in (None, team.team_id)
                else ""
            )
        ),
        help="Adding someone moves them from their team; whoever moves loses team pool access.",
    )
    if st.form_submit_button("Save members"):
        moved = refusals.admin_action(
            admin.set_team_members, actor=actor, team_id=team.team_id, user_ids=chosen_members
        )
        if moved is not None:
            st.success(f"{len(moved)} member{'s' if len(moved) != 1 else ''} changed.")
