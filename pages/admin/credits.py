"""Admin · Credits: grant or adjust a user's or a team pool's credits (with a reason), and the audit log."""

import json
from datetime import timedelta

import pandas as pd
import streamlit as st

from studio.accounts import admin
from studio.accounts.users import list_users
from studio.billing.credits import Account, balance
from studio.db.tables import AuditAction, Role, utcnow
from studio.web import analytics, app, auth, refusals
from studio.web.text import plain

actor = auth.require_user(Role.admin)

st.title("Credits")

with app.db_session() as session:
    users = {user.id: user.username for user in list_users(session=session)}
    teams = {team.id: team.name for team in admin.list_teams(session=session)}

st.subheader("Grant or adjust")
holder_col, account_col = st.columns([1, 2])
holder = holder_col.segmented_control("Account of", ["User", "Team pool"], default="User", required=True)
if holder == "User":
    user_id, team_id = account_col.selectbox("User", list(users), format_func=users.get, key="credit_user"), None
else:
    user_id, team_id = None, account_col.selectbox("Team", list(teams), format_func=teams.get, key="credit_team")
if user_id is not None or team_id is not None:
    with app.db_session() as session:
        account = Account(user_id=user_id) if user_id is not None else Account(team_id=team_id)
        st.caption(f"Balance now: {balance(session=session, account=account, now=utcnow())} credits.")

with st.form("credits", clear_on_submit=True):
    kind = st.radio(
        "What",
        ["Grant", "Adjust"],
        horizontal=True,
        help="Grant: new credits (optionally expiring). Adjust: a correction; negative removes credits.",
    )
    amount = st.number_input("Credits", value=10, step=1)
    expires = st.date_input("Grant expires (optional)", value=None, min_value=utcnow().date() + timedelta(days=1))
    reason = st.text_area("Reason (required, kept in the ledger and the audit log)")
    if st.form_submit_button("Apply"):
        target = {"user_id": user_id, "team_id": team_id, "amount": int(amount), "reason": reason}
        if kind == "Grant":
            expires_at = analytics.utc_midnight(expires) if expires else None
            done = refusals.admin_action(admin.grant_credits, actor=actor, expires_at=expires_at, **target)
        else:
            done = refusals.admin_action(admin.adjust_credits, actor=actor, **target)
        if done is not None:
            st.success(f"{kind}: {int(amount):+d} credits for {plain(users[user_id] if user_id else teams[team_id])}.")

st.subheader("Audit log")
st.caption("Every admin action, newest first. Entries are never changed or deleted.")
action_col, actor_col, target_col, since_col = st.columns(4)
action = action_col.selectbox("Action", [None, *AuditAction], format_func=lambda a: a or "All actions")
actor_id = actor_col.selectbox("By", [None, *users], format_func=lambda i: "Anyone" if i is None else users[i])
target_text = target_col.text_input("Target contains", placeholder="user mia, team Design…")
days = since_col.number_input("Last days", min_value=1, value=90)
filters = admin.AuditFilter(
    action=action, actor_id=actor_id, target_contains=target_text, since=utcnow() - timedelta(days=int(days))
)
with app.db_session() as session:
    entries = admin.audit_log(session=session, actor=actor, filters=filters)
log = pd.DataFrame(
    [
        {
            "When": entry.created_at,
            "By": admin.audit_actor(entry, users),
            "Action": entry.action.value,
            "Target": entry.target,
            "Details": json.dumps(entry.details, sort_keys=True),
        }
        for entry in entries
    ],
    columns=["When", "By", "Action", "Target", "Details"],
)
st.dataframe(log, hide_index=True)
analytics.csv_download("Download CSV", log, "audit-log.csv")
