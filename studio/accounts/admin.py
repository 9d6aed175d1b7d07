"""Admin services: users, teams and their budgets, credit grants and adjustments, the audit log.

Every action takes the acting user as keyword-only `actor` and refuses anyone who is not an active
admin *in the database* (a demoted admin's stale object is refused too). An action and its
`AuditEntry` are committed in one transaction; a refused or invalid action changes nothing and writes
nothing. Admins cannot change their own role, plan or active state, nor give themselves credits (their
own account, or a team pool they may draw on): another admin must. Since an admin can neither
deactivate nor demote themselves, the studio always keeps at least one active admin, the actor.
The audit log is append-only (see `AuditEntry`); this module only adds to it and reads it.

The actor may also be `OPERATOR`: whoever runs `python -m studio admin …` on the server (they hold the database
anyway). The operator passes every check an admin does, is never "themselves", and is recorded in the audit log
with no actor and `"by": "operator"` in the details; this is how the only admin of a fresh install gets credits.

Deactivating, a role change and a password reset revoke all of the user's login sessions in the same transaction
(studio.accounts.sessions): a copied cookie stops working at once, and reactivating an account revives none.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from studio.accounts.sessions import revoke_all
from studio.accounts.users import add_user, hash_password
from studio.billing.credits import Account, add_credits, adjust
from studio.catalogue.loras import checked_lora_file
from studio.catalogue.styles import Catalogue, ModelKind
from studio.config import Settings
from studio.db.limits import bounded_text
from studio.db.tables import (
    DEFAULT_ALERT_PERCENT,
    MAX_ALERT_PERCENT,
    MIN_ALERT_PERCENT,
    AuditAction,
    AuditEntry,
    CreditEntry,
    CreditKind,
    HiddenModel,
    Plan,
    RegisteredLora,
    Role,
    Team,
    User,
    utcnow,
)
from studio.errors import Forbidden, NotFound, Refused

TEMPORARY_PASSWORD_BYTES = 12  # token_urlsafe: 16 characters
OPERATOR_MARK = {"by": "operator"}  # in the details of every audit entry the operator wrote
MAX_LORA_NAME, MAX_LORA_LOCATION, MAX_LORA_ABOUT = 120, 1000, 255  # RegisteredLora's columns


@dataclass(frozen=True)
class Operator:
    """The server's operator (`python -m studio admin …`): no account, so no id."""

    id: None = None


OPERATOR = Operator()
Actor = User | Operator


def _require_admin(session: Session, actor: Actor) -> None:
    if isinstance(actor, Operator):
        return
    current = session.get(User, actor.id)
    if current is None or current.role is not Role.admin or not current.is_active:
        session.rollback()
        raise Forbidden("Only an active administrator can do this.")


@contextmanager
def _audited(session: Session, actor: Actor, action: AuditAction, now: datetime) -> Iterator[AuditEntry]:
    """Check the actor, run the body, then add its audit entry and commit both in one transaction.

    The body sets the entry's target and details; any exception rolls everything back."""
    _require_admin(session, actor)
    entry = AuditEntry(actor_id=actor.id, action=action, target="", details={}, created_at=now)
    try:
        yield entry
        if isinstance(actor, Operator):
            entry.details = {**entry.details, **OPERATOR_MARK}
        session.add(entry)
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"There is no user #{user_id}.")
    return user


def _target_user(session: Session, entry: AuditEntry, user_id: int) -> User:
    """The user an action is about, named in its audit entry."""
    user = _user(session, user_id)
    entry.target = f"user {user.username}"
    entry.details = {"user_id": user.id}
    return user


def _team(session: Session, team_id: int) -> Team:
    team = session.get(Team, team_id)
    if team is None:
        raise NotFound(f"There is no team #{team_id}.")
    return team


def _keeps_an_admin(session: Session, user: User) -> None:
    """Refuse to demote or deactivate the last active admin (only the operator could try: admins cannot do it to
    themselves), so the web studio always has someone who can administer it."""
    others = select(User.id).where(User.role == Role.admin, User.is_active, User.id != user.id)
    if user.role is Role.admin and user.is_active and session.exec(others).first() is None:
        raise Refused(f"{user.username} is the studio's only active admin; make another admin first.")


def _not_self(actor: Actor, user: User, what: str) -> None:
    if user.id == actor.id:
        raise Forbidden(f"You cannot {what} your own account; another admin must do it.")


# Users


def create_user(
    *,
    session: Session,
    actor: Actor,
    username: str,
    password: str,
    email: str,
    display_name: str | None = None,
    role: Role = Role.member,
    plan: Plan = Plan.free,
    team_id: int | None = None,
) -> User:
    with _audited(session, actor, AuditAction.user_create, utcnow()) as entry:
        if team_id is not None:
            _team(session, team_id)
        user = add_user(
            session=session,
            username=username,
            password=password,
            email=email,
            display_name=display_name,
            role=role,
            plan=plan,
            team_id=team_id,
        )
        entry.target = f"user {user.username}"
        entry.details = {"user_id": user.id, "role": role.value, "plan": plan.value, "team_id": team_id}
    session.refresh(user)
    return user


def set_active(*, session: Session, actor: Actor, user_id: int, active: bool) -> User:
    """Deactivate (they can no longer log in; history and credits stay) or reactivate an account."""
    action = AuditAction.user_reactivate if active else AuditAction.user_deactivate
    with _audited(session, actor, action, utcnow()) as entry:
        user = _target_user(session, entry, user_id)
        _not_self(actor, user, "deactivate or reactivate")
        if user.is_active == active:
            raise Refused(f"{user.username} is already {'active' if active else 'deactivated'}.")
        if not active:
            _keeps_an_admin(session, user)
        user.is_active = active
        session.add(user)
        if not active:
            entry.details["sessions_revoked"] = revoke_all(
                session=session, user_id=user.id, now=entry.created_at, reason="deactivated"
            )
    return user


def set_role(*, session: Session, actor: Actor, user_id: int, role: Role) -> User:
    with _audited(session, actor, AuditAction.user_role, utcnow()) as entry:
        user = _target_user(session, entry, user_id)
        _not_self(actor, user, "change the role of")
        if role is not Role.admin:
            _keeps_an_admin(session, user)
        entry.details |= {"before": user.role.value, "after": role.value}
        user.role = role
        session.add(user)
        entry.details["sessions_revoked"] = revoke_all(
            session=session, user_id=user.id, now=entry.created_at, reason="role changed"
        )
    return user


def set_plan(*, session: Session, actor: Actor, user_id: int, plan: Plan) -> User:
    """Change a user's plan; a Pro plan's monthly credits come at the user's next page view or submit."""
    with _audited(session, actor, AuditAction.user_plan, utcnow()) as entry:
        user = _target_user(session, entry, user_id)
        _not_self(actor, user, "change the plan of")  # a Pro plan brings credits
        entry.details |= {"before": user.plan.value, "after": plan.value}
        user.plan = plan
        session.add(user)
    return user


def set_team(
    *, session: Session, actor: Actor, user_id: int, team_id: int | None, can_use_team_pool: bool = False
) -> User:
    """Put a user in a team (None: in none) and decide whether its pool pays once their credits run out.
    Jobs keep the team they were submitted in: only future jobs count against the new team's budget."""
    pool = can_use_team_pool and team_id is not None
    with _audited(session, actor, AuditAction.user_team, utcnow()) as entry:
        user = _target_user(session, entry, user_id)
        if pool and (not user.can_use_team_pool or user.team_id != team_id):
            _not_self(actor, user, "open a team pool to")
        if team_id is not None:
            _team(session, team_id)
        _move(session, entry, user, team_id, pool)
    return user


def set_team_members(*, session: Session, actor: Actor, team_id: int, user_ids: list[int]) -> list[User]:
    """Make exactly `user_ids` the team's members: newcomers leave their old team, leavers join none, and
    pool access is off for everyone who moves. One audit entry per user moved, all in one transaction."""
    now = utcnow()
    _require_admin(session, actor)
    try:
        team = _team(session, team_id)
        members = set(session.exec(select(User.id).where(User.team_id == team.id)).all())
        moved = []
        for user_id in sorted(members ^ set(user_ids)):
            entry = AuditEntry(actor_id=actor.id, action=AuditAction.user_team, target="", details={}, created_at=now)
            user = _target_user(session, entry, user_id)
            _move(session, entry, user, team.id if user_id in user_ids else None, pool=False)
            if isinstance(actor, Operator):
                entry.details |= OPERATOR_MARK
            session.add(entry)
            moved.append(user)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return moved


def _move(session: Session, entry: AuditEntry, user: User, team_id: int | None, pool: bool) -> None:
    entry.details |= {
        "before": {"team_id": user.team_id, "can_use_team_pool": user.can_use_team_pool},
        "after": {"team_id": team_id, "can_use_team_pool": pool},
    }
    user.team_id = team_id
    user.can_use_team_pool = pool
    session.add(user)


def reset_password(*, session: Session, actor: Actor, user_id: int, new_password: str) -> User:
    """Set a new password (stored as a bcrypt hash; the old one is never shown, nor is this one logged) and sign
    the user out everywhere."""
    password_hash = hash_password(new_password)  # bcrypt (~0.25 s) before the transaction; refuses a bad password
    with _audited(session, actor, AuditAction.user_password_reset, utcnow()) as entry:
        user = _target_user(session, entry, user_id)
        user.password_hash = password_hash
        session.add(user)
        entry.details["sessions_revoked"] = revoke_all(
            session=session, user_id=user.id, now=entry.created_at, reason="password reset"
        )
    return user


def revoke_sessions(*, session: Session, actor: Actor, user_id: int) -> int:
    """Sign a user out on every browser (a lost laptop, a shared cookie); the number of sessions revoked."""
    with _audited(session, actor, AuditAction.sessions_revoke, utcnow()) as entry:
        user = _target_user(session, entry, user_id)
        revoked = revoke_all(session=session, user_id=user.id, now=entry.created_at, reason="revoked by an admin")
        entry.details["sessions"] = revoked
    return revoked


def temporary_password() -> str:
    """A random password for a reset, shown once to the admin to hand over."""
    return secrets.token_urlsafe(TEMPORARY_PASSWORD_BYTES)


# Teams


def create_team(
    *,
    session: Session,
    actor: Actor,
    name: str,
    monthly_budget: int | None = None,
    budget_alert_percent: int = DEFAULT_ALERT_PERCENT,
) -> Team:
    with _audited(session, actor, AuditAction.team_create, utcnow()) as entry:
        name = _team_name(name)
        _check_budget(monthly_budget, budget_alert_percent)
        _name_free(session, name)
        team = Team(name=name, monthly_budget=monthly_budget, budget_alert_percent=budget_alert_percent)
        session.add(team)
        session.flush()
        entry.target = f"team {name}"
        entry.details = {
            "team_id": team.id,
            "monthly_budget": monthly_budget,
            "budget_alert_percent": budget_alert_percent,
        }
    return team


def rename_team(*, session: Session, actor: Actor, team_id: int, name: str) -> Team:
    with _audited(session, actor, AuditAction.team_rename, utcnow()) as entry:
        team = _team(session, team_id)
        name = _team_name(name)
        _name_free(session, name)
        entry.target = f"team {name}"
        entry.details = {"team_id": team.id, "before": team.name, "after": name}
        team.name = name
        session.add(team)
    return team


def set_team_budget(
    *, session: Session, actor: Actor, team_id: int, monthly_budget: int | None, budget_alert_percent: int
) -> Team:
    """The credits the team's members may spend per calendar month (None: no limit) and the alert share."""
    with _audited(session, actor, AuditAction.team_budget, utcnow()) as entry:
        team = _team(session, team_id)
        _check_budget(monthly_budget, budget_alert_percent)
        entry.target = f"team {team.name}"
        entry.details = {
            "team_id": team.id,
            "before": {"monthly_budget": team.monthly_budget, "budget_alert_percent": team.budget_alert_percent},
            "after": {"monthly_budget": monthly_budget, "budget_alert_percent": budget_alert_percent},
        }
        team.monthly_budget = monthly_budget
        team.budget_alert_percent = budget_alert_percent
        session.add(team)
    return team


def list_teams(*, session: Session) -> list[Team]:
    return list(session.exec(select(Team).order_by(Team.name)))


def _team_name(name: str) -> str:
    return bounded_text(" ".join(name.split()), column=Team.__table__.c.name, what="A team name")


def _name_free(session: Session, name: str) -> None:
    if session.exec(select(Team.id).where(Team.name == name)).first() is not None:
        raise Refused(f"There is already a team called {name!r}.")


def _check_budget(monthly_budget: int | None, alert_percent: int) -> None:
    if monthly_budget is not None and (not isinstance(monthly_budget, int) or monthly_budget < 0):
        raise Refused(f"A monthly budget is a whole number of credits, 0 or more; got {monthly_budget!r}.")
    if not isinstance(alert_percent, int) or not MIN_ALERT_PERCENT <= alert_percent <= MAX_ALERT_PERCENT:
        raise Refused(
            f"The alert threshold is a percentage from {MIN_ALERT_PERCENT} to {MAX_ALERT_PERCENT}; "
            f"got {alert_percent!r}."
        )


# Credits


def grant_credits(
    *,
    session: Session,
    actor: Actor,
    amount: int,
    reason: str,
    user_id: int | None = None,
    team_id: int | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> CreditEntry:
    """Give a user or a team pool a new lot of `amount` credits (a grant, optionally expiring)."""
    now = now or utcnow()
    with _audited(session, actor, AuditAction.credit_grant, now) as entry:
        account = _credit_account(session, actor, entry, user_id, team_id)
        lot = add_credits(
            session=session,
            account=account,
            amount=amount,
            kind=CreditKind.grant,
            now=now,
            reason=reason,
            expires_at=expires_at,
            actor_id=actor.id,
        )
        entry.details |= {
            "amount": amount,
            "reason": lot.reason,
            "lot_id": lot.id,
            "expires_at": expires_at.isoformat() if expires_at else None,
        }
    return lot


def adjust_credits(
    *,
    session: Session,
    actor: Actor,
    amount: int,
    reason: str,
    user_id: int | None = None,
    team_id: int | None = None,
    now: datetime | None = None,
) -> list[CreditEntry]:
    """Correct a user's or team pool's balance: positive adds a lot, negative removes credits (never below 0)."""
    now = now or utcnow()
    with _audited(session, actor, AuditAction.credit_adjust, now) as entry:
        account = _credit_account(session, actor, entry, user_id, team_id)
        rows = adjust(session=session, account=account, amount=amount, reason=reason, actor_id=actor.id, now=now)
        entry.details |= {"amount": amount, "reason": reason.strip(), "ledger_ids": [row.id for row in rows]}
    return rows


def _credit_account(
    session: Session, actor: Actor, entry: AuditEntry, user_id: int | None, team_id: int | None
) -> Account:
    """The account credits go to, named in the audit entry; refuses an admin's own account or usable pool."""
    if (user_id is None) == (team_id is None):
        raise Refused("Choose a user or a team pool, exactly one.")
    if user_id is not None:
        user = _target_user(session, entry, user_id)
        _not_self(actor, user, "give credits to")
        return Account(user_id=user.id)
    team = _team(session, team_id)
    entry.target = f"team {team.name}"
    entry.details = {"team_id": team.id}
    current = None if isinstance(actor, Operator) else session.get(User, actor.id)
    if current is not None and current.team_id == team.id and current.can_use_team_pool:
        raise Forbidden(f"You draw on {team.name}'s pool yourself; another admin must change its credits.")
    return Account(team_id=team.id)


# The audit log


@dataclass(frozen=True)
class AuditFilter:
    action: AuditAction | None = None
    actor_id: int | None = None
    target_contains: str = ""
    since: datetime | None = None
    until: datetime | None = None  # exclusive


def audit_actor(entry: AuditEntry, usernames: dict[int, str]) -> str:
    """Who wrote an audit entry, for display: a username, "operator" (the command line), or "—" (nobody signed in)."""
    if entry.actor_id is not None:
        return usernames.get(entry.actor_id, f"#{entry.actor_id}")
    return "operator" if entry.details.get("by") == OPERATOR_MARK["by"] else "—"


def audit_log(
    *, session: Session, actor: Actor, filters: AuditFilter | None = None, limit: int = 500
) -> list[AuditEntry]:
    """Audit entries, newest first (admins only; reading writes no entry)."""
    _require_admin(session, actor)
    filters = filters or AuditFilter()
    query = select(AuditEntry)
    if filters.action is not None:
        query = query.where(AuditEntry.action == filters.action)
    if filters.actor_id is not None:
        query = query.where(AuditEntry.actor_id == filters.actor_id)
    if filters.target_contains.strip():
        query = query.where(col(AuditEntry.target).contains(filters.target_contains.strip()))
    if filters.since is not None:
        query = query.where(AuditEntry.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.created_at < filters.until)
    return list(session.exec(query.order_by(col(AuditEntry.id).desc()).limit(limit)))


def set_model_hidden(
    *, session: Session, actor: User, catalogue: Catalogue, model: str, hidden: bool, now: datetime | None = None
) -> None:
    """Take a catalogue model out of production (its styles are not offered, a submit naming it is refused:
    studio.catalogue.visibility), or offer it again. ControlNets steer other models' runs and are not switched on
    their own."""
    now = now or utcnow()
    with _audited(session, actor, AuditAction.model_production, now) as entry:
        model_entry = catalogue.models.get(model)
        if model_entry is None:
            raise Refused(f"There is no model {model!r} in the catalogue.")
        if model_entry.kind is ModelKind.controlnet:
            raise Refused(f"{model!r} is a ControlNet: it runs only with a style's model; hide that model instead.")
        row = session.get(HiddenModel, model)
        entry.target = f"model {model}"
        entry.details = {"before": {"in_production": row is None}, "after": {"in_production": not hidden}}
        if hidden and row is None:
            session.add(HiddenModel(name=model, hidden_by=actor.id, hidden_at=now))
        elif not hidden and row is not None:
            session.delete(row)


def register_lora(
    *,
    session: Session,
    actor: User,
    catalogue: Catalogue,
    settings: Settings,
    name: str,
    location: str,
    family: str,
    about: str = "",
    now: datetime | None = None,
) -> RegisteredLora:
    """Register the LoRA at `location` (a local file or folder, a hub id, "owner/repo/file.safetensors") for models
    of `family` under `name`: the file must be there and be a LoRA of that family (studio.catalogue.loras
    .checked_lora_file), and its SHA-256 is recorded. Refused, changing nothing, for a bad file or a name already
    taken (by the catalogue's [loras] or another registered LoRA)."""
    now = now or utcnow()
    name, location = name.strip(), location.strip()
    with _audited(session, actor, AuditAction.lora_register, now) as entry:
        if not name or len(name) > MAX_LORA_NAME:
            raise Refused(f"Give the LoRA a name of 1 to {MAX_LORA_NAME} characters. Nothing was changed.")
        if name in catalogue.loras or session.get(RegisteredLora, name) is not None:
            raise Refused(f"There is already a LoRA named {name!r}; choose another name. Nothing was changed.")
        if not location:
            raise Refused("Give the LoRA's location: a local file or folder, or a hub id. Nothing was changed.")
        if len(about.strip()) > MAX_LORA_ABOUT or len(location) > MAX_LORA_LOCATION:
            raise Refused(
                f"The location holds up to {MAX_LORA_LOCATION} characters and the description up to "
                f"{MAX_LORA_ABOUT}. Nothing was changed."
            )
        _, sha256 = checked_lora_file(location, family, settings)
        row = RegisteredLora(
            name=name,
            location=location,
            family=family,
            sha256=sha256,
            about=about.strip(),
            registered_by=actor.id,
            registered_at=now,
        )
        session.add(row)
        entry.target = f"LoRA {name}"
        entry.details = {"after": {"location": location, "family": family, "sha256": sha256}}
    session.refresh(row)
    return row


def remove_lora(*, session: Session, actor: User, name: str, now: datetime | None = None) -> str:
    """Remove a registered LoRA: it is no longer offered and new runs and re-runs naming it are refused. Jobs
    already queued keep running from the file and SHA-256 they recorded (the worker checks the file still hashes to
    it). The catalogue's own [loras] are changed in its file, not here."""
    with _audited(session, actor, AuditAction.lora_remove, now or utcnow()) as entry:
        row = session.get(RegisteredLora, name)
        if row is None:
            raise Refused(f"There is no registered LoRA {name!r} (the catalogue's own LoRAs are removed in its file).")
        entry.target = f"LoRA {name}"
        entry.details = {"before": {"location": row.location, "family": row.family, "sha256": row.sha256}}
        session.delete(row)
    return name
