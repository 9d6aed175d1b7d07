"""Server-side login sessions (studio.accounts.sessions), on a fake clock: one row per sign-in, idle and absolute
expiry, the cookie's signature, and revocation by every trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from studio.accounts import admin
from studio.accounts.sessions import (
    Client,
    SessionPolicy,
    active_sessions,
    cookie_value,
    end_session,
    open_session,
    session_id,
    session_user,
    sign_out_everywhere,
    token_from_cookie,
)
from studio.accounts.signin import change_password, sign_in
from studio.accounts.users import create_user, get_user
from studio.db.engine import write_session
from studio.db.tables import AuditAction, AuditEntry, LoginSession, Role, utcnow

pytestmark = pytest.mark.both_databases

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(days=2))
HERE = Client(address="10.0.0.7", user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131")
KEY = "k" * 48


@pytest.fixture
def session(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        create_user(session=session, username="mia", password="mia-password", email="mia@example.com")
        create_user(session=session, username="leo", password="leo-password", email="leo@example.com")
        yield session


def user(session, name):
    return get_user(session=session, username=name)


def opened(session, name: str, now: datetime = T0, policy: SessionPolicy = POLICY) -> str:
    token = open_session(session=session, user=user(session, name), client=HERE, now=now, policy=policy)
    session.commit()
    return token


def who(session, token: str, now: datetime, policy: SessionPolicy = POLICY) -> str | None:
    found = session_user(session=session, token=token, now=now, policy=policy)
    return None if found is None else found.username


def test_each_sign_in_is_one_row_keyed_by_the_token_s_hash_with_the_client_hint(session):
    _, first = sign_in(session=session, username="mia", password="mia-password", client=HERE, now=T0, policy=POLICY)
    _, second = sign_in(session=session, username="MIA", password="mia-password", client=HERE, now=T0, policy=POLICY)
    rows = session.exec(select(LoginSession)).all()
    assert len(rows) == 2 and first != second
    assert {row.id for row in rows} == {session_id(first), session_id(second)}
    row = session.get(LoginSession, session_id(first))
    assert first not in (row.id, row.user_agent)  # the table never holds the token itself
    assert (row.user_id, row.client_address, row.user_agent) == (user(session, "mia").id, HERE.address, HERE.user_agent)
    assert (row.created_at, row.last_seen_at, row.expires_at, row.revoked_at) == (T0, T0, T0 + POLICY.lifetime, None)
    assert who(session, first, T0) == who(session, second, T0) == "mia"


def test_a_session_ends_after_the_idle_limit_and_page_views_keep_it_alive(session):
    token = opened(session, "mia")
    now = T0
    for _ in range(3):  # a page view just inside the idle limit each time: three hours signed in
        now += POLICY.idle - timedelta(seconds=1)
        assert who(session, token, now) == "mia"
        assert session.get(LoginSession, session_id(token)).last_seen_at == now
    assert who(session, token, now + POLICY.idle) is None  # an hour without a page view


def test_a_session_ends_at_its_absolute_lifetime_however_busy(session):
    token = opened(session, "mia")
    now = T0
    while now + timedelta(minutes=30) < T0 + POLICY.lifetime:
        now += timedelta(minutes=30)
        assert who(session, token, now) == "mia"
    assert who(session, token, T0 + POLICY.lifetime) is None


def test_a_shorter_lifetime_setting_applies_to_open_sessions(session):
    token = opened(session, "mia")
    shorter = SessionPolicy(idle=timedelta(days=1), lifetime=timedelta(hours=3))
    assert who(session, token, T0 + timedelta(hours=2), shorter) == "mia"
    assert who(session, token, T0 + timedelta(hours=3), shorter) is None


def test_a_page_view_is_written_at_most_once_a_minute(session):
    token = opened(session, "mia")
    assert who(session, token, T0 + timedelta(seconds=59)) == "mia"
    assert session.get(LoginSession, session_id(token)).last_seen_at == T0
    assert who(session, token, T0 + timedelta(seconds=60)) == "mia"
    assert session.get(LoginSession, session_id(token)).last_seen_at == T0 + timedelta(seconds=60)


def test_the_cookie_carries_a_signed_token_and_nothing_else_is_accepted(session):
    token = opened(session, "mia")
    cookie = cookie_value(token, key=KEY)
    assert token_from_cookie(cookie, key=KEY) == token
    assert "mia" not in cookie
    forged = cookie_value(token, key="another-key-" * 4)
    tampered = cookie[:-1] + ("A" if cookie[-1] != "A" else "B")
    other_token = cookie_value("x" * 43, key=KEY).split(".")[1]
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VybmFtZSI6Im1pYSJ9.c2ln"
    for value in (forged, tampered, f"{token}.{other_token}", jwt_like, token, "", None, f"{cookie}.x"):
        assert token_from_cookie(value, key=KEY) is None


def test_signing_out_revokes_that_session_only(session):
    here, elsewhere = opened(session, "mia"), opened(session, "mia")
    end_session(session=session, token=here, now=T0 + timedelta(minutes=1))
    assert who(session, here, T0 + timedelta(minutes=2)) is None
    assert who(session, elsewhere, T0 + timedelta(minutes=2)) == "mia"
    assert session.get(LoginSession, session_id(here)).revoked_reason == "signed out"


def _everywhere(session, mia, leo, admin_user, now):
    sign_out_everywhere(session=session, user=mia, now=now)


def _own_password(session, mia, leo, admin_user, now):
    change_password(
        session=session,
        user=mia,
        current_password="mia-password",
        new_password="mia-new-password",
        client=HERE,
        now=now,
        policy=POLICY,
    )


def _reset(session, mia, leo, admin_user, now):
    admin.reset_password(session=session, actor=admin_user, user_id=mia.id, new_password="temporary-pass")


def _deactivate(session, mia, leo, admin_user, now):
    admin.set_active(session=session, actor=admin_user, user_id=mia.id, active=False)


def _role(session, mia, leo, admin_user, now):
    admin.set_role(session=session, actor=admin_user, user_id=mia.id, role=Role.admin)


def _admin_revoke(session, mia, leo, admin_user, now):
    admin.revoke_sessions(session=session, actor=admin_user, user_id=mia.id)


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [
        (_everywhere, "signed out everywhere"),
        (_own_password, "password changed"),
        (_reset, "password reset"),
        (_deactivate, "deactivated"),
        (_role, "role changed"),
        (_admin_revoke, "revoked by an admin"),
    ],
    ids=["sign-out-everywhere", "password-change", "password-reset", "deactivation", "role-change", "admin-revoke"],
)
def test_every_trigger_revokes_all_of_the_user_s_sessions_and_no_one_else_s(session, trigger, reason):
    now = utcnow()  # the admin services stamp their own time; the sessions are opened just before it
    mine = [opened(session, "mia", now), opened(session, "mia", now)]
    leos = opened(session, "leo", now)
    trigger(session, user(session, "mia"), user(session, "leo"), user(session, "admin"), now)
    later = now + timedelta(minutes=1)
    assert [who(session, token, later) for token in mine] == [None, None]
    assert who(session, leos, later) == "leo"
    assert {session.get(LoginSession, session_id(token)).revoked_reason for token in mine} == {reason}
    # Only the browser that changed its own password has a (new) session.
    still_open = active_sessions(session=session, user_id=user(session, "mia").id, now=later, policy=POLICY)
    assert len(still_open) == (1 if reason == "password changed" else 0)


def test_reactivating_an_account_revives_none_of_its_sessions(session):
    token = opened(session, "mia", T0)
    actor, mia = user(session, "admin"), user(session, "mia")
    admin.set_active(session=session, actor=actor, user_id=mia.id, active=False)
    admin.set_active(session=session, actor=actor, user_id=mia.id, active=True)
    assert who(session, token, T0 + timedelta(minutes=1)) is None


def test_a_deactivated_user_s_session_lets_nobody_in_even_unrevoked(session):
    token = opened(session, "mia")
    mia = user(session, "mia")
    mia.is_active = False
    session.add(mia)
    session.commit()
    assert who(session, token, T0 + timedelta(minutes=1)) is None


def test_the_account_lists_its_valid_sessions_the_latest_used_first(session):
    old, new = opened(session, "mia", T0), opened(session, "mia", T0 + timedelta(minutes=5))
    gone = opened(session, "mia", T0)
    end_session(session=session, token=gone, now=T0 + timedelta(minutes=6))
    opened(session, "leo")
    mia = user(session, "mia")
    listed = active_sessions(session=session, user_id=mia.id, now=T0 + timedelta(minutes=7), policy=POLICY)
    assert [row.id for row in listed] == [session_id(new), session_id(old)]


def test_signing_out_everywhere_is_audited_with_the_user_as_actor(session):
    opened(session, "mia")
    opened(session, "mia")
    mia = user(session, "mia")
    assert sign_out_everywhere(session=session, user=mia, now=T0) == 2
    [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == AuditAction.sessions_revoke)).all()
    assert (entry.actor_id, entry.target, entry.details["sessions"]) == (mia.id, "user mia", 2)
