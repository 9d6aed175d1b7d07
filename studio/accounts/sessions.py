"""Server-side login sessions: one row per sign-in on one browser, checked against the database on every run.

The browser's cookie carries `<token>.<signature>`: a random token and its HMAC-SHA256 under the cookie key, nothing
else (no username, no expiry). The table keys a session by the token's SHA-256, so neither the table nor the key
alone can make a valid cookie. A session lets its user in while

1. it is not revoked,
2. it is younger than the absolute lifetime (STUDIO_SESSION_MAX_DAYS, also stored as `expires_at`),
3. its last page view is within the idle limit (STUDIO_SESSION_IDLE_MINUTES), and
4. its user is active.

Signing out revokes that session; signing out everywhere, a password change or reset, deactivation, a role change
and an admin's revoke revoke all of the user's sessions (`revoke_all`), so a copied cookie stops working at once
and reactivating an account revives none. Revoked and expired rows stay as a record; only valid ones are listed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from studio.config import Settings
from studio.db.tables import AuditAction, AuditEntry, LoginSession, User

TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
# A page view is written at most this often per session (and at least four times per idle limit): the check on
# every run is then one primary-key read, and a write once a minute.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta  # a session ends after this long without a page view
    lifetime: timedelta  # and at the latest this long after its sign-in

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        return cls(
            idle=timedelta(minutes=settings.session_idle_minutes), lifetime=timedelta(days=settings.session_max_days)
        )

    @property
    def touch_every(self) -> timedelta:
        return min(TOUCH_EVERY, self.idle / 4)


@dataclass(frozen=True)
class Client:
    """Where a request comes from: the client hint kept with a session, and the key of per-client throttling."""

    address: str | None  # None: unknown (a local connection, or a proxy without STUDIO_CLIENT_IP_HEADER)
    user_agent: str = ""


def session_id(token: str) -> str:
    """The row id of the session `token` opened (its SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _signature(token: str, key: str) -> str:
    digest = hmac.new(key.encode(), b"studio-session:" + token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def cookie_value(token: str, *, key: str) -> str:
    """What the browser keeps: the token and its signature."""
    return f"{token}.{_signature(token, key)}"


def token_from_cookie(value: str | None, *, key: str) -> str | None:
    """The token in a cookie the studio signed with `key`; None for anything else (absent, forged, an old JWT)."""
    if not value or value.count(".") != 1:
        return None
    token, signature = value.split(".")
    if not _TOKEN.fullmatch(token) or not hmac.compare_digest(signature, _signature(token, key)):
        return None
    return token


def open_session(*, session: Session, user: User, client: Client, now: datetime, policy: SessionPolicy) -> str:
    """Add a session for `user` and return its secret token (the caller commits, with the sign-in it belongs to)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        LoginSession(
            id=session_id(token),
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.lifetime,
            client_address=None if client.address is None else client.address[:64],
            user_agent=client.user_agent[:255],
        )
    )
    return token


def _valid(now: datetime, policy: SessionPolicy) -> tuple:
    """The SQL condition of a valid session (numbered steps 1–3 of the module docstring)."""
    return (
        col(LoginSession.revoked_at).is_(None),
        LoginSession.expires_at > now,
        LoginSession.created_at > now - policy.lifetime,
        LoginSession.last_seen_at > now - policy.idle,
    )


def session_user(*, session: Session, token: str, now: datetime, policy: SessionPolicy) -> User | None:
    """The active user the session of `token` signs in, or None; records the page view (see TOUCH_EVERY)."""
    found = session.exec(
        select(LoginSession.last_seen_at, User)
        .join(User, col(User.id) == LoginSession.user_id)
        .where(LoginSession.id == session_id(token), col(User.is_active), *_valid(now, policy))
    ).first()
    # End the read transaction: on SQLite a read transaction cannot become a write once another connection wrote.
    session.commit()
    if found is None:
        return None
    last_seen, user = found
    if now - last_seen >= policy.touch_every:
        session.exec(
            update(LoginSession)
            .where(col(LoginSession.id) == session_id(token), col(LoginSession.last_seen_at) < now)
            .values(last_seen_at=now)
        )
        session.commit()
    return user


def active_sessions(*, session: Session, user_id: int, now: datetime, policy: SessionPolicy) -> list[LoginSession]:
    """The user's valid sessions, the most recently used first."""
    query = select(LoginSession).where(LoginSession.user_id == user_id, *_valid(now, policy))
    return list(session.exec(query.order_by(col(LoginSession.last_seen_at).desc())))


def revoke_all(*, session: Session, user_id: int, now: datetime, reason: str) -> int:
    """Revoke every session of the user still open; the number revoked. The caller commits, with the change that
    calls for it (a password, a role, deactivation), so both happen or neither."""
    result = session.exec(
        update(LoginSession)
        .where(col(LoginSession.user_id) == user_id, col(LoginSession.revoked_at).is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    return result.rowcount


def end_session(*, session: Session, token: str, now: datetime) -> None:
    """Sign out: revoke the session of `token` (whatever copies of its cookie exist)."""
    session.exec(
        update(LoginSession)
        .where(col(LoginSession.id) == session_id(token), col(LoginSession.revoked_at).is_(None))
        .values(revoked_at=now, revoked_reason="signed out")
    )
    session.commit()


def sign_out_everywhere(*, session: Session, user: User, now: datetime) -> int:
    """Revoke all of the user's sessions, this browser's too (the user's own action, audited); the number revoked."""
    revoked = revoke_all(session=session, user_id=user.id, now=now, reason="signed out everywhere")
    session.add(
        AuditEntry(
            actor_id=user.id,
            action=AuditAction.sessions_revoke,
            target=f"user {user.username}",
            details={"user_id": user.id, "sessions": revoked},
            created_at=now,
        )
    )
    session.commit()
    return revoked
