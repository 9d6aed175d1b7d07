"""A team's budget on a page: the alert in every page's sidebar, and on the Teams page."""

from __future__ import annotations

import streamlit as st

from studio.billing.budgets import BudgetStatus, user_budget_status
from studio.db.tables import User, utcnow
from studio.web import app


def budget_alert(user: User) -> None:
    """In the sidebar: the user's team budget, once its alert threshold is reached."""
    with app.db_session() as session:
        status = user_budget_status(session=session, user=user, now=utcnow())
    if status is not None and status.alert:
        show_budget_alert(status)


def show_budget_alert(status: BudgetStatus) -> None:
    if status.exhausted:
        st.error(f"{status.describe()} New jobs are refused until next month or until an admin raises it.")
    else:
        st.warning(f"{status.describe()} Jobs that would go over it are refused.")
