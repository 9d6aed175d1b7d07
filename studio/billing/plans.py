"""Plans and credit packs: who gets how many credits, when, for how long, and who goes first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from studio.billing.credits import Account, add_credits
from studio.db.tables import CreditEntry, CreditKind, Plan, User

TRIAL_CREDITS = 10
STARTER_PACK_CREDITS = 100


@dataclass(frozen=True)
class PlanSpec:
    label: str
    monthly_credits: int
    rollover_months: int  # unused monthly credits stay this many months after their own month
    priority: int  # queue class: higher runs first
    batch: bool


PLANS: dict[Plan, PlanSpec] = {
    Plan.free: PlanSpec("Free", monthly_credits=0, rollover_months=0, priority=0, batch=False),
    Plan.pro_monthly: PlanSpec("Pro monthly", monthly_credits=400, rollover_months=1, priority=1, batch=True),
    Plan.pro_annual: PlanSpec("Pro annual", monthly_credits=500, rollover_months=2, priority=1, batch=True),
}


def month_start(moment: datetime, months_later: int = 0) -> datetime:
    index = moment.year * 12 + (moment.month - 1) + months_later
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def grant_trial(*, session: Session, user: User, now: datetime) -> CreditEntry:
    return add_credits(
        session=session,
        account=Account(user_id=user.id),
        amount=TRIAL_CREDITS,
        kind=CreditKind.grant,
        now=now,
        reason="Free trial credits",
        idempotency_key=f"trial:{user.id}",
    )


def buy_starter_pack(*, session: Session, user: User, now: datetime, reference: str) -> CreditEntry:
    """100 credits that never expire. `reference` (the payment's id) is part of the ledger's unique key,
    so recording the same payment twice raises IntegrityError instead of granting twice."""
    return add_credits(
        session=session,
        account=Account(user_id=user.id),
        amount=STARTER_PACK_CREDITS,
        kind=CreditKind.allocation,
        now=now,
        reason="Starter pack",
        idempotency_key=f"starter:{user.id}:{reference}",
    )


def allocation_key(user: User, now: datetime) -> str:
    return f"plan:{user.id}:{now:%Y-%m}"


def allocate_monthly(*, session: Session, user: User, now: datetime) -> CreditEntry | None:
    """This month's plan credits, once per user and month; they expire after the rollover window."""
    spec = PLANS[user.plan]
    if spec.monthly_credits == 0 or not user.is_active:
        return None
    key = allocation_key(user, now)
    if session.exec(select(CreditEntry.id).where(CreditEntry.idempotency_key == key)).first() is not None:
        return None
    try:
        # A savepoint: when a concurrent transaction allocated first (PostgreSQL), only this insert is undone.
        with session.begin_nested():
            return add_credits(
                session=session,
                account=Account(user_id=user.id),
                amount=spec.monthly_credits,
                kind=CreditKind.allocation,
                now=now,
                reason=f"{spec.label} credits for {now:%B %Y}",
                expires_at=month_start(now, 1 + spec.rollover_months),
                idempotency_key=key,
            )
    except IntegrityError:
        return None


def queue_priority(user: User) -> int:
    return PLANS[user.plan].priority
