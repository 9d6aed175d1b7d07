"""Account: credits, plan, the ledger behind the balance, usage, where you are signed in, and your password."""

import streamlit as st

from studio.billing.credits import Account, history, lots, spendable
from studio.billing.plans import PLANS, STARTER_PACK_CREDITS, TRIAL_CREDITS
from studio.db.tables import utcnow
from studio.jobs.queries import usage_summary
from studio.web import account, app, auth

user = auth.require_user()
now = utcnow()
plan = PLANS[user.plan]

st.title("Account")

with app.db_session() as session:
    credits = spendable(session=session, user=user, now=now)
    open_lots = [lot for lot in lots(session=session, account=Account(user_id=user.id)) if lot.remaining > 0]
    entries = history(session=session, account=Account(user_id=user.id))
    usage = usage_summary(session=session, user_id=user.id, since=now.replace(day=1, hour=0, minute=0, second=0))

balance_col, team_col, plan_col, usage_col = st.columns(4)
balance_col.metric("Your credits", credits.personal)
team_col.metric("Team pool", "—" if credits.team is None else credits.team)
plan_col.metric("Plan", plan.label)
usage_col.metric("Credits spent this month", usage.credits_spent)

if plan.monthly_credits:
    st.caption(
        f"{plan.label}: {plan.monthly_credits} credits each month, unused ones roll over for "
        f"{plan.rollover_months} month{'s' if plan.rollover_months != 1 else ''}; your jobs run ahead of free ones."
    )
else:
    st.caption(
        f"Free plan: {TRIAL_CREDITS} trial credits. A Starter pack adds {STARTER_PACK_CREDITS} credits that never "
        "expire; Pro plans add monthly credits, priority in the queue and batch work. Ask an admin."
    )

st.subheader("Where your credits are")
st.dataframe(
    [
        {
            "Lot": f"#{lot.id}",
            "Credits left": lot.remaining,
            "Expires": lot.expires_at.strftime("%Y-%m-%d") if lot.expires_at else "never",
        }
        for lot in open_lots
    ],
    hide_index=True,
)
st.caption("Credits that expire are spent first, soonest expiry first.")

st.subheader("Usage this month")
st.write(
    f"{usage.jobs} jobs · {usage.complete} complete · {usage.failed} failed · "
    f"{usage.cancelled} cancelled · {usage.credits_spent} credits spent, {usage.credits_refunded} refunded"
)

st.subheader("Ledger")
st.dataframe(
    [
        {
            "When": entry.created_at,
            "What": entry.kind.value,
            "Credits": entry.amount,
            "Job": entry.job_id,
            "Note": entry.reason or "",
        }
        for entry in entries
    ],
    hide_index=True,
)

st.subheader("Where you are signed in")
account.signed_in_sessions(user)

st.subheader("Change your password")
account.password_form(user)
