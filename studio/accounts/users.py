"""Users: creation, password hashing and the credentials view streamlit-authenticator needs.

The users table is the only source of truth. The authenticator gets a fresh dict built from it
on every run (it knows no database), and pages read the role from the table, not from the
authenticator's session state.
"""

from __future__ import annotations

import re

import bcrypt
from sqlmodel import Session, select

from studio.billing.plans import grant_trial
from studio.db.tables import Plan, Role, User, utcnow
from studio.errors import Refused

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{2,31}")
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
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
    # bcrypt takes ~0.25 s: do it before the first query, so the write transaction stays short.
    password_hash = hash_password(password) if len(password) >= MIN_PASSWORD_LENGTH else ""
    if not USERNAME_PATTERN.fullmatch(username):
        raise Refused(
            "Username must be 3–32 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.")
    if "@" not in email:
        raise Refused(f"Not an e-mail address: {email!r}.")
    if get_user(session=session, username=username) is not None:
        raise Refused(f"Username {username!r} is taken.")
    user = User(
        username=username,
        email=email.strip(),
        display_name=(display_name or username).strip(),
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
    """The logged-in user, or None if the name is unknown or the account was deactivated."""
    if not username:
        return None
    user = get_user(session=session, username=username)
    return user if user is not None and user.is_active else None


def list_users(*, session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.username)))


def authenticator_credentials(*, session: Session) -> dict:
    """The `credentials` dict streamlit-authenticator expects, for active users only."""
    users = session.exec(select(User).where(User.is_active)).all()
    return {
        "usernames": {
            user.username: {
                "email": user.email,
                "first_name": user.display_name,
                "last_name": "",
                "password": user.password_hash,
                "roles": [user.role.value],
            }
            for user in users
        }
    }
