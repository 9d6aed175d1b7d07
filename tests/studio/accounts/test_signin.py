"""Signing in (studio.accounts.signin), on a fake clock: throttling per username and per client with a growing wait,
one bcrypt check for known, unknown and deactivated usernames alike, the audit log, and changing one's password."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bcrypt
import pytest
from sqlmodel import func, select

from studio.accounts import signin
from studio.accounts.sessions import Client, SessionPolicy, session_user
from studio.accounts.signin import (
    DUMMY_HASH,
    FIRST_WAIT,
    MAX_FAILURES,
    WINDOW,
    SignInRefused,
    change_password,
    sign_in,
    wait_after,
)
from studio.accounts.users import create_user, get_user, verify_password
from studio.db.engine import write_session
from studio.db.tables import AuditAction, AuditEntry, LoginAttempt
from studio.errors import Refused

pytestmark = pytest.mark.both_databases

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(days=2))
HOME = Client(address="10.0.0.7")
ELSEWHERE = Client(address="192.0.2.9")


@pytest.fixture
def session(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        create_user(session=session, username="mia", password="mia-password", email="mia@example.com")
        gone = create_user(session=session, username="gone", password="gone-password", email="gone@example.com")
        gone.is_active = False
        session.add(gone)
        session.commit()
        yield session


def attempt(session, username: str, password: str, now: datetime, client: Client = HOME):
    return sign_in(session=session, username=username, password=password, client=client, now=now, policy=POLICY)


def fail(session, username: str, now: datetime, client: Client = HOME) -> SignInRefused:
    with pytest.raises(SignInRefused) as refused:
        attempt(session, username, "wrong-password", now, client)
    return refused.value


def audit(session, action: AuditAction) -> list[AuditEntry]:
    return list(session.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def test_the_right_password_signs_in_and_a_wrong_one_is_refused_and_audited(session):
    user, token = attempt(session, " MIA ", "mia-password", T0)
    assert user.username == "mia"
    assert session_user(session=session, token=token, now=T0, policy=POLICY).username == "mia"
    refused = fail(session, "mia", T0)
    assert str(refused) == "Username or password is incorrect." and refused.until is None
    [entry] = audit(session, AuditAction.login_failure)
    assert (entry.actor_id, entry.target, entry.details) == (
        None,
        "user mia",
        {"client": "10.0.0.7", "reason": "wrong password"},
    )


def test_after_five_failures_tries_wait_with_a_message_that_says_until_when(session, monkeypatch):
    for i in range(MAX_FAILURES - 1):
        assert fail(session, "mia", T0 + timedelta(seconds=i)).until is None
    fifth = T0 + timedelta(seconds=MAX_FAILURES - 1)
    refused = fail(session, "mia", fifth)
    assert refused.until == fifth + FIRST_WAIT
    assert f"try again after {refused.until:%H:%M:%S} UTC (in 30 s)" in str(refused)

    # While waiting, even the right password is refused, at once: no password is checked.
    checks = []
    monkeypatch.setattr(signin.bcrypt, "checkpw", lambda *args: checks.append(args) or True)
    with pytest.raises(SignInRefused, match=r"try again after .* UTC \(in 20 s\)"):
        attempt(session, "mia", "mia-password", fifth + timedelta(seconds=10))
    assert checks == []
    monkeypatch.undo()

    user, _ = attempt(session, "mia", "mia-password", refused.until)
    assert user.username == "mia"
    [lockout] = audit(session, AuditAction.login_lockout)
    assert lockout.details == {"client": "10.0.0.7", "until": refused.until.isoformat(), "by": ["username", "client"]}
    assert len(audit(session, AuditAction.login_failure)) == MAX_FAILURES  # the refused try is not a failure


def test_each_failure_past_five_doubles_the_wait_up_to_the_window():
    assert [wait_after(n) for n in range(MAX_FAILURES)] == [timedelta(0)] * MAX_FAILURES
    assert [wait_after(n).total_seconds() for n in range(5, 11)] == [30, 60, 120, 240, 480, 900]
    assert wait_after(40) == WINDOW


def test_a_wait_grows_when_the_next_try_fails_too(session):
    now = T0
    for _ in range(MAX_FAILURES):
        refused = fail(session, "mia", now)
    now = refused.until
    assert fail(session, "mia", now).until == now + 2 * FIRST_WAIT


def test_a_client_guessing_across_usernames_is_throttled_and_others_are_not(session):
    for i, name in enumerate(["ana", "ben", "cyd", "dee", "eve"]):
        refused = fail(session, name, T0 + timedelta(seconds=i))
    assert refused.until is not None
    with pytest.raises(SignInRefused, match="try again after"):
        attempt(session, "mia", "mia-password", T0 + timedelta(seconds=6))
    user, _ = attempt(session, "mia", "mia-password", T0 + timedelta(seconds=6), ELSEWHERE)
    assert user.username == "mia"


def test_a_username_guessed_from_many_clients_is_throttled(session):
    for i in range(MAX_FAILURES):
        fail(session, "mia", T0 + timedelta(seconds=i), Client(address=f"192.0.2.{i}"))
    with pytest.raises(SignInRefused, match="try again after"):
        attempt(session, "mia", "mia-password", T0 + timedelta(seconds=6), Client(address="198.51.100.1"))


def test_a_success_starts_the_username_s_count_again_but_not_the_client_s(session):
    for i in range(MAX_FAILURES - 1):
        fail(session, "mia", T0 + timedelta(seconds=i), Client(address=f"192.0.2.{i}"))
    attempt(session, "mia", "mia-password", T0 + timedelta(seconds=10), Client(address="198.51.100.1"))
    assert fail(session, "mia", T0 + timedelta(seconds=11), Client(address="198.51.100.2")).until is None

    for i in range(MAX_FAILURES - 1):
        fail(session, f"name{i}", T0 + timedelta(seconds=20 + i))
    attempt(session, "mia", "mia-password", T0 + timedelta(seconds=30))  # the guesser's own account
    assert fail(session, "name9", T0 + timedelta(seconds=31)).until is not None


def test_failures_older_than_the_window_no_longer_count_and_are_deleted(session):
    for i in range(MAX_FAILURES - 1):
        fail(session, "mia", T0 + timedelta(seconds=i))
    later = T0 + WINDOW + timedelta(seconds=MAX_FAILURES)
    assert fail(session, "mia", later).until is None
    assert session.exec(select(func.count()).select_from(LoginAttempt)).one() == 1


def test_a_local_client_with_no_address_is_counted_by_username_only(session):
    local = Client(address=None)
    for i, name in enumerate(["ana", "ben", "cyd", "dee", "eve"]):
        assert fail(session, name, T0 + timedelta(seconds=i), local).until is None
    user, _ = attempt(session, "mia", "mia-password", T0 + timedelta(seconds=6), local)
    assert user.username == "mia"


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("mia", "mia-password", None),
        ("mia", "wrong-password", "wrong password"),
        ("nobody", "whatever-password", "unknown username"),
        ("gone", "gone-password", "deactivated account"),
    ],
)
def test_known_unknown_and_deactivated_usernames_cost_one_bcrypt_check_of_the_same_cost(
    session, monkeypatch, username, password, reason
):
    checked, real_checkpw = [], bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed.decode())
        return real_checkpw(password, hashed)

    monkeypatch.setattr(signin.bcrypt, "checkpw", checkpw)
    if reason is None:
        attempt(session, username, password, T0)
    else:
        with pytest.raises(SignInRefused, match=r"Username or password is incorrect\."):
            attempt(session, username, password, T0)
        [entry] = audit(session, AuditAction.login_failure)
        assert entry.details["reason"] == reason
    [hashed] = checked
    stored = get_user(session=session, username=username)
    assert hashed == (stored.password_hash if stored is not None else DUMMY_HASH)
    assert hashed.split("$")[2] == bcrypt.gensalt().decode().split("$")[2]  # the cost every stored hash has


def test_a_password_over_72_bytes_is_told_so_and_counted_never_a_traceback(session):
    with pytest.raises(SignInRefused, match=r"at most 72 bytes \(bcrypt's limit\)"):
        attempt(session, "mia", "é" * 40, T0)
    [entry] = audit(session, AuditAction.login_failure)
    assert entry.details["reason"] == "password over 72 bytes"


def change(session, current: str, new: str, now: datetime = T0, client: Client = HOME) -> str:
    mia = get_user(session=session, username="mia")
    return change_password(
        session=session, user=mia, current_password=current, new_password=new, client=client, now=now, policy=POLICY
    )


def test_a_password_change_needs_the_current_password_and_signs_out_every_other_session(session):
    _, other_browser = attempt(session, "mia", "mia-password", T0)
    before = get_user(session=session, username="mia").password_hash
    with pytest.raises(SignInRefused, match="current password is not right; nothing changed"):
        change(session, "not-it", "mia-new-password")
    assert get_user(session=session, username="mia").password_hash == before
    assert audit(session, AuditAction.login_failure)[0].details["reason"] == "wrong current password"

    token = change(session, "mia-password", "mia-new-password", T0 + timedelta(minutes=1))
    later = T0 + timedelta(minutes=2)
    assert session_user(session=session, token=other_browser, now=later, policy=POLICY) is None
    assert session_user(session=session, token=token, now=later, policy=POLICY).username == "mia"
    assert verify_password("mia-new-password", get_user(session=session, username="mia").password_hash)
    [entry] = audit(session, AuditAction.password_change)
    assert entry.actor_id == get_user(session=session, username="mia").id
    assert entry.details["sessions_revoked"] == 1


@pytest.mark.parametrize(
    ("new", "message"), [("short", "at least 8"), ("x" * 73, "at most 72 bytes"), ("trailing-space ", "space")]
)
def test_a_new_password_bcrypt_cannot_take_is_refused_before_anything(session, new, message):
    before = get_user(session=session, username="mia").password_hash
    with pytest.raises(Refused, match=message):
        change(session, "mia-password", new)
    assert get_user(session=session, username="mia").password_hash == before
    assert session.exec(select(func.count()).select_from(AuditEntry)).one() == 0


def test_guessing_the_current_password_is_throttled_like_signing_in(session):
    for i in range(MAX_FAILURES):
        with pytest.raises(SignInRefused):
            change(session, f"guess-{i}", "mia-new-password", T0 + timedelta(seconds=i))
    with pytest.raises(SignInRefused, match="try again after"):
        change(session, "mia-password", "mia-new-password", T0 + timedelta(seconds=6))
