"""AppTest: signing in through the form (throttled), the Account page's sessions and password change, and an admin
signing a user out everywhere. The clock the web layer reads is fixed where a test counts failures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import select

from studio.accounts.sessions import Client, SessionPolicy, open_session, session_user
from studio.accounts.signin import MAX_FAILURES
from studio.accounts.users import create_user, get_user, verify_password
from studio.config import get_settings
from studio.db.engine import session_for, write_session
from studio.db.tables import AuditAction, AuditEntry, LoginSession, utcnow
from studio.web.auth import SESSION_TOKEN_STATE
from tests.support import MEMBER_PASSWORD, log_in, signed_in_page, texts

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
def mia(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        return create_user(session=session, username="mia", password=MEMBER_PASSWORD, email="mia@example.com")


def another_browser(username: str) -> str:
    """A session of `username` opened elsewhere; its token."""
    settings = get_settings()
    with write_session(settings.database_url) as session:
        user = get_user(session=session, username=username)
        policy = SessionPolicy.from_settings(settings)
        token = open_session(
            session=session, user=user, client=Client(address="192.0.2.9"), now=utcnow(), policy=policy
        )
        session.commit()
    return token


def signed_in(token: str) -> str | None:
    settings = get_settings()
    with session_for(settings.database_url) as session:
        user = session_user(session=session, token=token, now=utcnow(), policy=SessionPolicy.from_settings(settings))
    return None if user is None else user.username


def audit(settings, action: AuditAction) -> list[AuditEntry]:
    with session_for(settings.database_url) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)))


def test_the_fifth_failure_through_the_form_says_until_when_and_the_next_try_waits(mia, studio_settings, monkeypatch):
    monkeypatch.setattr("studio.web.auth.utcnow", lambda: T0)
    for _ in range(MAX_FAILURES - 1):
        assert "Username or password is incorrect." in texts(log_in("mia", "wrong-password").error)
    [fifth] = texts(log_in("mia", "wrong-password").error)
    assert "try again after 09:00:30 UTC (in 30 s)" in fifth
    refused = log_in("mia", MEMBER_PASSWORD)  # the right password, while the wait lasts
    assert any("try again after 09:00:30 UTC" in e for e in texts(refused.error))
    assert SESSION_TOKEN_STATE not in refused.session_state and not refused.title[1:]  # the login form only
    assert len(audit(studio_settings, AuditAction.login_failure)) == MAX_FAILURES
    assert len(audit(studio_settings, AuditAction.login_lockout)) == 1


def test_the_account_page_lists_my_sessions_and_signs_out_everywhere(mia, studio_settings):
    elsewhere = another_browser("mia")
    at = signed_in_page("account", "mia")
    [sessions] = [frame.value for frame in at.dataframe if "This browser" in frame.value.columns]
    assert sorted(sessions["This browser"].tolist()) == [False, True]
    assert sorted(sessions["Address"].tolist()) == ["192.0.2.9", "this machine"]
    at.button(key="account.sign_out_everywhere").click().run()
    assert "Please log in." in texts(at.warning)
    assert signed_in(elsewhere) is None
    with session_for(studio_settings.database_url) as session:
        rows = session.exec(select(LoginSession).where(LoginSession.user_id == mia.id)).all()
    assert len(rows) == 2 and all(row.revoked_reason == "signed out everywhere" for row in rows)


def test_changing_my_password_needs_the_current_one_and_signs_out_my_other_browsers(mia, studio_settings):
    elsewhere = another_browser("mia")
    at = signed_in_page("account", "mia")
    mine = at.session_state[SESSION_TOKEN_STATE]

    def change(current: str, new: str, repeated: str) -> None:
        [form] = [block for block in at.get("form") if block.proto.form.form_id == "account.password"]
        for field, value in zip(form.text_input, (current, new, repeated), strict=True):
            field.input(value)
        form.form_submit_button[0].click().run()

    change("not-my-password", "a-new-password", "a-new-password")
    assert any("current password is not right; nothing changed" in e for e in texts(at.error))
    change(MEMBER_PASSWORD, "a-new-password", "another-password")
    assert any("differ; nothing changed" in e for e in texts(at.error))
    change(MEMBER_PASSWORD, "é" * 37, "é" * 37)
    assert any("at most 72 bytes" in e for e in texts(at.error))
    with session_for(studio_settings.database_url) as session:
        assert verify_password(MEMBER_PASSWORD, get_user(session=session, username="mia").password_hash)
    assert signed_in(elsewhere) == "mia"

    change(MEMBER_PASSWORD, "a-new-password", "a-new-password")
    assert not at.exception, at.exception
    assert any("Password changed" in s for s in texts(at.success))
    assert at.title[0].value == "Account"  # this browser stays signed in, in a new session
    assert at.session_state[SESSION_TOKEN_STATE] != mine and signed_in(at.session_state[SESSION_TOKEN_STATE]) == "mia"
    assert signed_in(elsewhere) is None and signed_in(mine) is None
    assert log_in("mia", "a-new-password").title[0].value == "Transform"


def test_an_admin_signs_a_user_out_everywhere(mia, studio_settings):
    elsewhere = another_browser("mia")
    at = signed_in_page("admin/users", "admin")
    at.selectbox(key="manage_user").set_value(mia.id).run()
    at.button(key="revoke_sessions").click().run()
    assert "mia: 1 session ended." in texts(at.success)
    assert signed_in(elsewhere) is None
    [entry] = audit(studio_settings, AuditAction.sessions_revoke)
    assert (entry.target, entry.details["sessions"]) == ("user mia", 1)
