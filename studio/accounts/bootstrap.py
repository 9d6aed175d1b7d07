"""First run: data folders, schema, the cookie key and the first admin account, with the plan and credits the
configuration gives it (STUDIO_ADMIN_PLAN, STUDIO_ADMIN_CREDITS), so a fresh install can use every feature. The
web app and every `python -m studio` command run it."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from studio.accounts.admin import OPERATOR_MARK
from studio.accounts.users import add_user, check_new_password
from studio.billing.credits import Account, add_credits
from studio.config import Settings
from studio.db.engine import init_db, write_session
from studio.db.tables import AuditAction, AuditEntry, CreditKind, Plan, Role, User, utcnow
from studio.errors import ConfigError, Refused
from studio.media.storage import write_atomically

log = logging.getLogger(__name__)

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
    return _generated_cookie_key(settings.data_dir / "secrets" / "cookie_key")


def _generated_cookie_key(key_file: Path) -> str:
    """The key in `key_file`, written first if there is none or a bad one (empty or short: anyone could sign a
    cookie with it). A lock beside the file makes processes starting together agree on one key, and the key is
    written to a temporary file then renamed, so no process ever reads half a key."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(key_file.with_name(key_file.name + ".lock")):
        if key_file.is_file():
            key = key_file.read_text().strip()
            if len(key) >= MIN_COOKIE_KEY_LENGTH:
                return key
            log.warning(
                "The cookie key file %s is bad (%d characters, fewer than %d): writing a new key; everyone signs "
                "in again.",
                key_file,
                len(key),
                MIN_COOKIE_KEY_LENGTH,
            )
        key = secrets.token_urlsafe(48)
        write_atomically(key_file, key.encode(), prefix=f".{key_file.name}.")  # mode 0600
        return key


def _check_admin_password(settings: Settings) -> None:
    if settings.admin_password is None:
        return
    try:
        check_new_password(settings.admin_password)
    except Refused as exc:
        raise ConfigError(f"STUDIO_ADMIN_PASSWORD (or [studio] admin_password) is not usable: {exc}") from None


def ensure_admin(settings: Settings) -> str | None:
    """Create the first admin if the studio has none, on the configured plan and with the configured credits (one
    transaction: the account, its ledger rows and, for the plan and credits, an audit entry by the operator); return
    the password if we generated it."""
    with write_session(settings.database_url) as session:
        if session.exec(select(User).where(User.role == Role.admin)).first() is not None:
            return None
        password = settings.admin_password or secrets.token_urlsafe(12)
        now = utcnow()
        try:
            admin = add_user(
                session=session,
                username=settings.admin_username,
                password=password,
                email=settings.admin_email,
                display_name="Administrator",
                role=Role.admin,
                plan=settings.admin_plan,
            )
            if settings.admin_credits:
                add_credits(
                    session=session,
                    account=Account(user_id=admin.id),
                    amount=settings.admin_credits,
                    kind=CreditKind.grant,
                    now=now,
                    reason="First admin's credits (STUDIO_ADMIN_CREDITS)",
                    idempotency_key=f"first-admin:{admin.id}",
                )
            if settings.admin_credits or settings.admin_plan is not Plan.free:  # what a new account would not get
                session.add(
                    AuditEntry(
                        actor_id=None,
                        action=AuditAction.user_create,
                        target=f"user {admin.username}",
                        details={
                            "user_id": admin.id,
                            "role": Role.admin.value,
                            "plan": settings.admin_plan.value,
                            "credits": settings.admin_credits,
                            "first_run": True,
                            **OPERATOR_MARK,
                        },
                        created_at=now,
                    )
                )
            session.commit()
        except IntegrityError:  # another process created it between our check and insert
            session.rollback()
            return None
    return None if settings.admin_password else password


def bootstrap(settings: Settings) -> BootstrapReport:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _check_admin_password(settings)
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
