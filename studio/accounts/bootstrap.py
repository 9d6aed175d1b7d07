"""First run: data folders, schema, the cookie key and the first admin account."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from studio.accounts.users import create_user
from studio.config import Settings
from studio.db.engine import init_db, write_session
from studio.db.tables import Role, User
from studio.errors import ConfigError

MIN_COOKIE_KEY_LENGTH = 32
# Values shipped in examples; a studio configured with one of them would accept forged cookies.
PLACEHOLDER_COOKIE_KEYS = {"change-me", "some_key", "replace-with-at-least-32-random-characters"}


@dataclass(frozen=True)
class BootstrapReport:
    cookie_key: str
    admin_username: str
    # Set only when this run created the admin with a generated password (shown once, never stored).
    generated_admin_password: str | None


def cookie_key_for(settings: Settings) -> str:
    """The configured cookie key if it is strong enough, else one generated once under data/."""
    if settings.cookie_key is not None:
        key = settings.cookie_key
        if key in PLACEHOLDER_COOKIE_KEYS or len(key) < MIN_COOKIE_KEY_LENGTH:
            raise ConfigError(
                f"The cookie key (STUDIO_COOKIE_KEY or [studio] cookie_key) must be at least "
                f"{MIN_COOKIE_KEY_LENGTH} random characters and not an example value. Generate one with: "
                'python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        return key
    key_file = settings.data_dir / "secrets" / "cookie_key"
    if not key_file.is_file():
        _write_private(key_file, secrets.token_urlsafe(48))
    return key_file.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def ensure_admin(settings: Settings) -> str | None:
    """Create the first admin if the studio has none; return the password if we generated it."""
    with write_session(settings.database_url) as session:
        if session.exec(select(User).where(User.role == Role.admin)).first() is not None:
            return None
        password = settings.admin_password or secrets.token_urlsafe(12)
        try:
            create_user(
                session=session,
                username=settings.admin_username,
                password=password,
                email=settings.admin_email,
                display_name="Administrator",
                role=Role.admin,
            )
        except IntegrityError:  # another process created it between our check and insert
            return None
    return None if settings.admin_password else password


def bootstrap(settings: Settings) -> BootstrapReport:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cookie_key = cookie_key_for(settings)
    init_db(settings.database_url)
    generated = ensure_admin(settings)
    if generated is not None:
        print(
            "\n  Img2Img Studio created the first admin account (shown once, not stored):\n"
            f"    username: {settings.admin_username}\n    password: {generated}\n"
            "  Set STUDIO_ADMIN_PASSWORD (or [studio] admin_password) before the first run to choose it.\n",
            flush=True,
        )
    return BootstrapReport(
        cookie_key=cookie_key,
        admin_username=settings.admin_username,
        generated_admin_password=generated,
    )
