"""Team budgets: how many credits a team's members may spend per calendar month (UTC), and the alert.

A team's spend in a month is what `studio.analytics.usage` calls credits spent: the prices of the jobs its
members submitted that month (`Job.team_id`, the submitter's team at submit time) that were not
refunded. That is exactly those jobs' reserve plus refund rows in the ledger: queued and running jobs
count, a failed or cancelled job counts nothing — also when it is refunded after the month ended.
It counts every credit those jobs took, personal or from the team pool.

`check_team_budget` runs inside `studio.jobs.submit.submit_job`'s transaction, before anything is charged:
a job that would take its team over the budget is refused. On SQLite that transaction holds the write
lock; on PostgreSQL the check locks the team's row (`SELECT … FOR UPDATE`) until the submit commits, so
either way two submits cannot both squeeze under the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import Session, select

from studio.analytics.usage import UsageFilter, spent_by_team
from studio.billing.plans import month_start
from studio.db.tables import Team, User
from studio.errors import Refused


@dataclass(frozen=True)
class BudgetStatus:
    team_id: int
    team_name: str
    month: date  # the first day of the month it is about
    budget: int | None  # None: the team has no budget
    alert_percent: int
    spent: int

    @property
    def percent_used(self) -> float | None:
        if self.budget is None:
            return None
        return 100.0 * self.spent / self.budget if self.budget else 100.0

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.spent, 0)

    @property
    def alert(self) -> bool:
        """At or past the alert threshold (members and admins see a warning)."""
        return self.budget is not None and self.spent * 100 >= self.budget * self.alert_percent

    @property
    def exhausted(self) -> bool:
        """Nothing left: no job, whatever its price, fits in the budget."""
        return self.budget is not None and self.spent >= self.budget

    def describe(self) -> str:
        if self.budget is None:
            return f"Team {self.team_name} has spent {self.spent} credits in {self.month:%B %Y} (no budget)."
        return (
            f"Team {self.team_name} has spent {self.spent} of its {self.budget}-credit budget for "
            f"{self.month:%B %Y} ({self.percent_used:.0f} %)."
        )


def team_spend(*, session: Session, team_id: int, now: datetime) -> int:
    """Credits the team's jobs submitted in `now`'s month spent (see the module docstring)."""
    month = UsageFilter(start=month_start(now), end=month_start(now, 1), team_id=team_id)
    return spent_by_team(session=session, usage=month).get(team_id, 0)


def budget_status(*, session: Session, team: Team, now: datetime) -> BudgetStatus:
    return _status(team, team_spend(session=session, team_id=team.id, now=now), now)


def user_budget_status(*, session: Session, user: User, now: datetime) -> BudgetStatus | None:
    """The budget of the user's team, or None when the user has no team or the team no budget."""
    team = session.get(Team, user.team_id) if user.team_id is not None else None
    if team is None or team.monthly_budget is None:
        return None
    return budget_status(session=session, team=team, now=now)


def all_budget_statuses(*, session: Session, now: datetime) -> list[BudgetStatus]:
    """Every team's status this month, by name (one GROUP BY over the month's rollup rows for all the spends)."""
    spent = spent_by_team(session=session, usage=UsageFilter(start=month_start(now), end=month_start(now, 1)))
    teams = session.exec(select(Team).order_by(Team.name)).all()
    return [_status(team, int(spent.get(team.id, 0)), now) for team in teams]


def check_team_budget(*, session: Session, user: User, cost: int, now: datetime) -> None:
    """Refuse a job of `cost` credits that would take the user's team over its monthly budget.

    Locks the team's row for the rest of the caller's transaction (PostgreSQL; SQLite's write lock is
    already held), so concurrent submits by the team's members are checked — and draw on the team's
    pool — one after another.
    """
    if user.team_id is None:
        return
    team = session.exec(select(Team).where(Team.id == user.team_id).with_for_update()).first()
    if team is None or team.monthly_budget is None:
        return
    status = budget_status(session=session, team=team, now=now)
    if status.spent + cost <= status.budget:
        return
    raise Refused(
        f"{status.describe()} This job costs {cost}, which would take the team over its budget, so it was "
        "not queued and nothing was charged. An admin can raise the budget; it starts again next month."
    )


def _status(team: Team, spent: int, now: datetime) -> BudgetStatus:
    return BudgetStatus(
        team_id=team.id,
        team_name=team.name,
        month=month_start(now).date(),
        budget=team.monthly_budget,
        alert_percent=team.budget_alert_percent,
        spent=spent,
    )
