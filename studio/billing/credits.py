"""The credits ledger: exact integer accounting in an append-only table (see `CreditEntry`).

Functions here add rows to the caller's session and never commit: a job's state change and its
credit movement must land in one transaction, which the caller (`studio.jobs.submit`, `studio.jobs.leases`) commits.
Every function takes `now` so tests can run a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from studio.db.limits import bounded_text
from studio.db.tables import CreditEntry, CreditKind, User
from studio.errors import Refused

# Kinds that open a lot (credits in); every other kind moves credits of an existing lot.
LOT_OPENING_KINDS = (CreditKind.grant, CreditKind.allocation, CreditKind.adjustment)
_REASON = CreditEntry.__table__.c.reason


class InsufficientCredits(Refused):
    """Not enough credits; nothing was charged or recorded."""


@dataclass(frozen=True)
class Account:
    user_id: int | None = None
    team_id: int | None = None

    def __post_init__(self) -> None:
        if (self.user_id is None) == (self.team_id is None):
            raise ValueError("An account is a user or a team, exactly one of them.")

    def where(self):
        if self.user_id is not None:
            return (CreditEntry.user_id == self.user_id, col(CreditEntry.team_id).is_(None))
        return (CreditEntry.team_id == self.team_id, col(CreditEntry.user_id).is_(None))

    def row(self, **fields) -> CreditEntry:
        return CreditEntry(user_id=self.user_id, team_id=self.team_id, **fields)


@dataclass(frozen=True)
class Lot:
    id: int
    account: Account
    remaining: int
    expires_at: datetime | None


def ledger_sum(*, session: Session, account: Account) -> int:
    """The plain sum of the account's rows (equals `balance` once expired lots are swept)."""
    total = session.exec(select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(*account.where())).one()
    return int(total)


def lots(*, session: Session, account: Account) -> list[Lot]:
    """The account's lots with credits left, in the order they are spent: expiring ones first,
    soonest expiry first, then the never-expiring ones, oldest first."""
    openings = session.exec(
        select(CreditEntry).where(*account.where(), col(CreditEntry.lot_id).is_(None), CreditEntry.amount > 0)
    ).all()
    if not openings:
        return []
    moved = dict(
        session.exec(
            select(CreditEntry.lot_id, func.sum(CreditEntry.amount))
            .where(col(CreditEntry.lot_id).in_([row.id for row in openings]))
            .group_by(CreditEntry.lot_id)
        ).all()
    )
    found = [
        Lot(row.id, account, row.amount + int(moved.get(row.id, 0)), row.expires_at)
        for row in openings
        if row.amount + int(moved.get(row.id, 0)) > 0
    ]
    return sorted(
        found, key=lambda lot: (lot.expires_at is None, lot.expires_at.timestamp() if lot.expires_at else 0, lot.id)
    )


def balance(*, session: Session, account: Account, now: datetime) -> int:
    """Credits the account can spend at `now` (expired lots excluded, swept or not)."""
    return sum(lot.remaining for lot in lots(session=session, account=account) if not _expired(lot, now))


def _expired(lot: Lot, now: datetime) -> bool:
    return lot.expires_at is not None and lot.expires_at <= now


def expire_lots(*, session: Session, account: Account, now: datetime) -> int:
    """Write an expiry row for what is left in each lot past its expiry; return the credits expired."""
    expired = 0
    for lot in lots(session=session, account=account):
        if _expired(lot, now):
            session.add(account.row(kind=CreditKind.expiry, amount=-lot.remaining, lot_id=lot.id, created_at=now))
            expired += lot.remaining
    session.flush()
    return expired


def add_credits(
    *,
    session: Session,
    account: Account,
    amount: int,
    kind: CreditKind,
    now: datetime,
    reason: str,
    expires_at: datetime | None = None,
    actor_id: int | None = None,
    idempotency_key: str | None = None,
) -> CreditEntry:
    """Open a lot of `amount` credits (a grant, an allocation or a positive admin adjustment)."""
    if kind not in LOT_OPENING_KINDS:
        raise ValueError(f"{kind.value} does not add credits")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise Refused(f"Credits are whole positive numbers, got {amount!r}.")
    if not reason.strip():
        raise Refused("Say why the credits are added.")
    reason = bounded_text(reason, column=_REASON, what="A reason")
    entry = account.row(
        kind=kind,
        amount=amount,
        expires_at=expires_at,
        reason=reason.strip(),
        actor_id=actor_id,
        idempotency_key=idempotency_key,
        created_at=now,
    )
    session.add(entry)
    session.flush()
    return entry


def _draw(
    *, session: Session, sources: list[Lot], amount: int, kind: CreditKind, now: datetime, **fields
) -> list[CreditEntry]:
    rows = []
    left = amount
    for lot in sources:
        if left == 0:
            break
        take = min(lot.remaining, left)
        rows.append(lot.account.row(kind=kind, amount=-take, lot_id=lot.id, created_at=now, **fields))
        left -= take
    assert left == 0, "caller checked the total"
    session.add_all(rows)
    session.flush()
    return rows


def spendable_lots(*, session: Session, user: User, now: datetime) -> list[Lot]:
    """The user's own lots, then (if an admin allowed it) the team pool's: the order a charge takes."""
    accounts = [Account(user_id=user.id)]
    if user.team_id is not None and user.can_use_team_pool:
        accounts.append(Account(team_id=user.team_id))
    found: list[Lot] = []
    for account in accounts:
        expire_lots(session=session, account=account, now=now)
        found.extend(lots(session=session, account=account))
    return found


def reserve(*, session: Session, user: User, job_id: int, cost: int, now: datetime) -> list[CreditEntry]:
    """Take `cost` credits for a job: personal credits first, then the team pool if allowed."""
    sources = spendable_lots(session=session, user=user, now=now)
    available = sum(lot.remaining for lot in sources)
    if available < cost:
        personal = sum(lot.remaining for lot in sources if lot.account.user_id is not None)
        team = available - personal
        raise InsufficientCredits(
            f"Not enough credits: this job costs {cost}, your balance is {personal}"
            + (f" and your team pool has {team}" if user.can_use_team_pool and user.team_id else "")
            + ". Nothing was charged."
        )
    return _draw(session=session, sources=sources, amount=cost, kind=CreditKind.reserve, now=now, job_id=job_id)


def settle(*, session: Session, job_id: int, outcome: CreditKind, now: datetime) -> list[CreditEntry]:
    """Close a job's reserve: `commit` keeps it (rows of 0), `refund` returns it to the same lots.

    Mirrors each reserve row; the ledger's unique (job, kind, lot) constraint rejects a second
    settlement of the same kind, and callers settle only on the job's single final transition.
    """
    if outcome not in (CreditKind.commit, CreditKind.refund):
        raise ValueError(f"A reserve is settled by commit or refund, not {outcome.value}")
    reserved = session.exec(
        select(CreditEntry).where(CreditEntry.job_id == job_id, CreditEntry.kind == CreditKind.reserve)
    ).all()
    rows = [
        CreditEntry(
            user_id=row.user_id,
            team_id=row.team_id,
            kind=outcome,
            amount=0 if outcome is CreditKind.commit else -row.amount,
            lot_id=row.lot_id,
            job_id=job_id,
            created_at=now,
        )
        for row in reserved
    ]
    session.add_all(rows)
    session.flush()
    if outcome is CreditKind.refund:
        # A refund into a lot that expired meanwhile expires again at once, like the rest of the lot.
        for account in {Account(row.user_id, row.team_id) for row in rows}:
            expire_lots(session=session, account=account, now=now)
    return rows


def adjust(
    *, session: Session, account: Account, amount: int, reason: str, actor_id: int, now: datetime
) -> list[CreditEntry]:
    """An admin's correction: positive opens a lot, negative removes credits (never below zero)."""
    if not reason.strip():
        raise Refused("An adjustment needs a reason.")
    reason = bounded_text(reason, column=_REASON, what="A reason")
    if amount > 0:
        return [
            add_credits(
                session=session,
                account=account,
                amount=amount,
                kind=CreditKind.adjustment,
                now=now,
                reason=reason,
                actor_id=actor_id,
            )
        ]
    if amount == 0 or not isinstance(amount, int):
        raise Refused(f"An adjustment is a non-zero whole number, got {amount!r}.")
    expire_lots(session=session, account=account, now=now)
    sources = lots(session=session, account=account)
    available = sum(lot.remaining for lot in sources)
    if available < -amount:
        raise InsufficientCredits(f"Cannot remove {-amount} credits: the balance is {available}.")
    return _draw(
        session=session,
        sources=sources,
        amount=-amount,
        kind=CreditKind.adjustment,
        now=now,
        reason=reason.strip(),
        actor_id=actor_id,
    )


@dataclass(frozen=True)
class Spendable:
    personal: int
    team: int | None  # None when the user may not draw on a team pool

    @property
    def total(self) -> int:
        return self.personal + (self.team or 0)


def spendable(*, session: Session, user: User, now: datetime) -> Spendable:
    """What the user can spend now: their own credits, and the team pool if an admin allowed it."""
    personal = balance(session=session, account=Account(user_id=user.id), now=now)
    if user.team_id is None or not user.can_use_team_pool:
        return Spendable(personal, None)
    return Spendable(personal, balance(session=session, account=Account(team_id=user.team_id), now=now))


def history(*, session: Session, account: Account, limit: int = 200) -> list[CreditEntry]:
    """The account's ledger rows, newest first."""
    return list(
        session.exec(
            select(CreditEntry).where(*account.where()).order_by(col(CreditEntry.id).desc()).limit(limit)
        ).all()
    )
