"""Signing in and changing one's own password: the bcrypt check behind the login form, throttled.

Throttling counts failed tries per username and per client address (`LoginAttempt`). After MAX_FAILURES failures
within WINDOW, each further try must wait: FIRST_WAIT after the fifth failure, doubling with each failure after
it, at most WINDOW. A try during a wait is refused at once, without checking the password, and the message says
until when. A username's count starts again after its successful sign-in; a client's does not (signing in to one's
own account between guesses must not reset the guessing). A client with no known address (a local connection)
is counted by username only.

Every try that is checked costs one bcrypt check of the same cost, whether the username is known, unknown or
deactivated (unknown ones are checked against DUMMY_HASH), so the answer's timing does not tell which usernames
exist. Failures and the waits they start go to the audit log, with no actor (nobody is signed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import bcrypt
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from studio.accounts.sessions import Client, SessionPolicy, open_session, revoke_all
from studio.accounts.users import MAX_PASSWORD_BYTES, check_new_password, get_user, hash_password, normalize_username
from studio.db.tables import AuditAction, AuditEntry, LoginAttempt, User
from studio.errors import Refused

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
FIRST_WAIT = timedelta(seconds=30)
# The bcrypt hash (cost 12, bcrypt.gensalt()'s default, as every stored hash) of a random password nobody knows:
# what unknown and deactivated usernames are checked against.
DUMMY_HASH = "$2b$12$4v64t4iczPOu72JpDuxr0eROOv7dwopqV5mvNF2c.w0fCH.PFFj2a"
WRONG_CREDENTIALS = "Username or password is incorrect."
_USERNAME_COLUMN = LoginAttempt.__table__.c.username.type.length


class SignInRefused(Refused):
    """A sign-in (or password change) that did not happen; `until` is set while further tries must wait."""

    def __init__(self, message: str, *, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True)
class Wait:
    until: datetime
    reasons: tuple[str, ...]  # "username", "client"


def wait_after(n_failures: int) -> timedelta:
    """How long tries wait after the last of `n_failures` recent failures (none below MAX_FAILURES)."""
    if n_failures < MAX_FAILURES:
        return timedelta(0)
    return min(FIRST_WAIT * 2 ** (n_failures - MAX_FAILURES), WINDOW)


def _until(session: Session, condition, since: datetime) -> datetime | None:
    count, last = session.exec(
        select(func.count(), func.max(LoginAttempt.created_at)).where(
            condition, col(LoginAttempt.succeeded).is_(False), LoginAttempt.created_at > since
        )
    ).one()
    return None if count < MAX_FAILURES else last + wait_after(count)


def current_wait(*, session: Session, username: str, client: Client, now: datetime) -> Wait | None:
    """Whether tries for `username` or from `client` must wait now, and until when."""
    since = now - WINDOW
    last_success = session.exec(
        select(func.max(LoginAttempt.created_at)).where(LoginAttempt.username == username, col(LoginAttempt.succeeded))
    ).one()
    waits = {"username": _until(session, LoginAttempt.username == username, max(since, last_success or since))}
    if client.address is not None:
        waits["client"] = _until(session, LoginAttempt.client_address == client.address, since)
    waits = {reason: until for reason, until in waits.items() if until is not None and until > now}
    if not waits:
        return None
    return Wait(until=max(waits.values()), reasons=tuple(waits))


def wait_message(wait: Wait, now: datetime) -> str:
    seconds = max(1, round((wait.until - now).total_seconds()))
    return (
        f"Too many failed sign-ins for this username or from this address: try again after "
        f"{wait.until:%H:%M:%S} UTC (in {seconds} s)."
    )


def _check(password: str, password_hash: str) -> bool:
    """One bcrypt check; a password over bcrypt's limit is wrong without one (none can be set)."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return False
    return bcrypt.checkpw(password.encode(), password_hash.encode())


def _record_failure(
    session: Session, *, username: str, client: Client, now: datetime, reason: str, actor: User | None = None
) -> Wait | None:
    """Count and audit a failed try (the caller commits); the wait it starts, if any, is audited too."""
    session.add(LoginAttempt(username=username, client_address=client.address, succeeded=False, created_at=now))
    target = f"user {username}"
    session.add(
        AuditEntry(
            actor_id=None if actor is None else actor.id,
            action=AuditAction.login_failure,
            target=target,
            details={"client": client.address, "reason": reason},
            created_at=now,
        )
    )
    session.flush()
    wait = current_wait(session=session, username=username, client=client, now=now)
    if wait is not None:
        session.add(
            AuditEntry(
                actor_id=None if actor is None else actor.id,
                action=AuditAction.login_lockout,
                target=target,
                details={"client": client.address, "until": wait.until.isoformat(), "by": list(wait.reasons)},
                created_at=now,
            )
        )
    return wait


def _failed(message: str, wait: Wait | None, now: datetime) -> SignInRefused:
    if wait is None:
        return SignInRefused(message)
    return SignInRefused(f"{message} {wait_message(wait, now)}", until=wait.until)


def sign_in(
    *, session: Session, username: str, password: str, client: Client, now: datetime, policy: SessionPolicy
) -> tuple[User, str]:
    """Check a username and password; the user and a new session's token, or SignInRefused with the reason.

    1. While the username or the client must wait, refuse at once.
    2. One bcrypt check, outside any transaction (~0.25 s): against the user's hash, or DUMMY_HASH for an unknown
       username; a deactivated account is checked against its own hash and refused whatever the result.
    3. A failure is counted and audited, and says until when the next try waits if it started a wait.
    4. A success is counted (the username's failures start again) and opens a session.
    """
    name = normalize_username(username)[:_USERNAME_COLUMN]
    wait = current_wait(session=session, username=name, client=client, now=now)
    user = get_user(session=session, username=name)
    session.commit()  # end the read transaction before bcrypt
    if wait is not None:
        raise SignInRefused(wait_message(wait, now), until=wait.until)

    matches = _check(password, user.password_hash if user is not None else DUMMY_HASH)
    session.exec(delete(LoginAttempt).where(LoginAttempt.created_at < now - WINDOW))
    if user is not None and matches and user.is_active:
        session.add(LoginAttempt(username=name, client_address=client.address, succeeded=True, created_at=now))
        token = open_session(session=session, user=user, client=client, now=now, policy=policy)
        session.commit()
        return user, token

    too_long = len(password.encode()) > MAX_PASSWORD_BYTES
    if too_long:
        reason = "password over 72 bytes"
    elif user is None:
        reason = "unknown username"
    elif not user.is_active:
        reason = "deactivated account"
    else:
        reason = "wrong password"
    wait = _record_failure(session, username=name, client=client, now=now, reason=reason)
    session.commit()
    message = (
        f"Passwords are at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit), so this one cannot be right."
        if too_long
        else WRONG_CREDENTIALS
    )
    raise _failed(message, wait, now)


def change_password(
    *,
    session: Session,
    user: User,
    current_password: str,
    new_password: str,
    client: Client,
    now: datetime,
    policy: SessionPolicy,
) -> str:
    """The user's own password change; the token of a new session for this browser.

    The current password is checked (and throttled, counted as a failed sign-in) as on the login form. The new one
    is stored, every session of the user is revoked (copies of any cookie stop working) and one is opened for the
    browser that asked, all in one transaction with its audit entry.
    """
    check_new_password(new_password)
    wait = current_wait(session=session, username=user.username, client=client, now=now)
    stored = session.get(User, user.id)
    session.commit()  # end the read transaction before bcrypt
    if wait is not None:
        raise SignInRefused(wait_message(wait, now), until=wait.until)
    if stored is None or not stored.is_active:
        raise Refused("This account can no longer sign in.")
    if not _check(current_password, stored.password_hash):
        wait = _record_failure(
            session, username=user.username, client=client, now=now, reason="wrong current password", actor=stored
        )
        session.commit()
        raise _failed("Your current password is not right; nothing changed.", wait, now)

    new_hash = hash_password(new_password)
    stored.password_hash = new_hash
    session.add(stored)
    revoked = revoke_all(session=session, user_id=stored.id, now=now, reason="password changed")
    session.add(
        AuditEntry(
            actor_id=stored.id,
            action=AuditAction.password_change,
            target=f"user {stored.username}",
            details={"user_id": stored.id, "sessions_revoked": revoked},
            created_at=now,
        )
    )
    token = open_session(session=session, user=stored, client=client, now=now, policy=policy)
    session.commit()
    return token
