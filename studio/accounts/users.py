"""Users: creation, the password rules and bcrypt hashing.

The users table is the only source of truth: pages read the signed-in user, role included, from it on every run
(studio.accounts.sessions), never from the login form's session state.
"""

from __future__ import annotations

import re

import bcrypt
from sqlmodel import Session, select

from studio.billing.plans import grant_trial
from studio.db.limits import bounded_text
from studio.db.tables import Plan, Role, User, utcnow
from studio.errors import Refused

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{2,31}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; bcrypt 5 raises ValueError past it


def check_new_password(password: str) -> None:
    """Refused, with the rule, unless `password` may be set: 8 characters to 72 bytes, no surrounding spaces."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.")
    size = len(password.encode())
    if size > MAX_PASSWORD_BYTES:
        raise Refused(
            f"Password must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit); this one is {size} bytes "
            "(a letter beyond plain ASCII takes 2–4)."
        )
    if password != password.strip():
        raise Refused("Password cannot begin or end with a space: the login form leaves those out.")


def hash_password(password: str) -> str:
    """The bcrypt hash of a password that passes `check_new_password` (~0.25 s)."""
    check_new_password(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` is the one hashed; a password over bcrypt's limit never is (none can be set)."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return False
    return bcrypt.checkpw(password.encode(), password_hash.encode())


def normalize_username(username: str) -> str:
    return username.strip().lower()


def create_user(
    *,
    session: Session,
    username: str,
    password: str,
    email: str,
    display_name: str | None = None,
    role: Role = Role.member,
    team_id: int | None = None,
) -> User:
    user = add_user(
        session=session,
        username=username,
        password=password,
        email=email,
        display_name=display_name,
        role=role,
        team_id=team_id,
    )
    session.commit()
    session.refresh(user)
    return user


def add_user(
    *,
    session: Session,
    username: str,
    password: str,
    email: str,
    display_name: str | None = None,
    role: Role = Role.member,
    team_id: int | None = None,
    plan: Plan = Plan.free,
) -> User:
    """`create_user` without the commit, for callers that write more in the same transaction
    (`studio.accounts.admin.create_user` adds its audit entry)."""
    username = normalize_username(username)
    if not USERNAME_PATTERN.fullmatch(username):
        raise Refused(
            "Username must be 3–32 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    email = bounded_text(email, column=User.__table__.c.email, what="An e-mail address")
    if "@" not in email:
        raise Refused(f"Not an e-mail address: {email!r}.")
    display_name = bounded_text(display_name or username, column=User.__table__.c.display_name, what="A display name")
    # bcrypt takes ~0.25 s: do it before the first query, so the write transaction stays short.
    password_hash = hash_password(password)
    if get_user(session=session, username=username) is not None:
        raise Refused(f"Username {username!r} is taken.")
    user = User(
        username=username,
        email=email,
        display_name=display_name,
        role=role,
        plan=plan,
        team_id=team_id,
        password_hash=password_hash,
    )
    session.add(user)
    session.flush()
    grant_trial(session=session, user=user, now=utcnow())
    return user


def get_user(*, session: Session, username: str) -> User | None:
    return session.exec(select(User).where(User.username == normalize_username(username))).first()


def get_active_user(*, session: Session, username: str | None) -> User | None:
    """The user called `username`, or None if the name is unknown or the account was deactivated."""
    if not username:
        return None
    user = get_user(session=session, username=username)
    return user if user is not None and user.is_active else None


def list_users(*, session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.username)))


def dismiss_getting_started(*, session: Session, user_id: int) -> None:
    """The user closed the getting-started panel: it is not shown to them again."""
    user = session.get(User, user_id)
    if user is not None and not user.getting_started_dismissed:
        user.getting_started_dismissed = True
        session.add(user)
        session.commit()
