"""Signing in, in a real browser: the session cookie is stored and survives a reload; a copy of the browser's cookies
opens the studio elsewhere until the session ends (log out, a password reset, deactivation), then gives the login
form and nothing else."""

from __future__ import annotations

import pytest

from tests.e2e.support import MEMBER_PASSWORD, RUN_TIMEOUT_MS, log_in, run_in_studio, wait_for_idle

COOKIE_NAME = "img2img_studio_auth"  # the default STUDIO_COOKIE_NAME


def stored_cookies(page) -> list[dict]:
    """The browser's cookies, once the studio's session cookie is among them (written right after signing in)."""
    page.wait_for_function(f"document.cookie.includes('{COOKIE_NAME}=')")
    return page.context.cookies()


def open_with(browser, url: str, cookies: list[dict]):
    """A fresh browser (no state of its own) with `cookies`, at the studio."""
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    context.add_cookies(cookies)
    page = context.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    page.goto(url)
    wait_for_idle(page)
    return page


def assert_only_the_login_form(page) -> None:
    page.get_by_role("button", name="Login").wait_for()
    assert page.locator("h1:has-text('Transform')").count() == 0
    assert page.get_by_text("Signed in as").count() == 0
    assert page.get_by_role("link", name="History").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0


def assert_signed_in(page) -> None:
    page.wait_for_selector("h1:has-text('Transform')")
    assert page.get_by_text("Signed in as").count() == 1


def add_user(studio_env: dict[str, str], username: str, password: str) -> None:
    run_in_studio(
        studio_env,
        f"""
from studio.accounts.users import create_user, get_user
from studio.config import get_settings
from studio.db.engine import write_session
with write_session(get_settings().database_url) as session:
    if get_user(session=session, username={username!r}) is None:
        create_user(session=session, username={username!r}, password={password!r}, email="{username}@example.com")
""",
    )


def admin_does(studio_env: dict[str, str], action: str, username: str, **arguments) -> None:
    """Run an admin service (studio.accounts.admin.<action>) as the admin on `username`."""
    run_in_studio(
        studio_env,
        f"""
from studio.accounts import admin
from studio.accounts.users import get_user
from studio.config import get_settings
from studio.db.engine import write_session
with write_session(get_settings().database_url) as session:
    actor, target = get_user(session=session, username="admin"), get_user(session=session, username={username!r})
    admin.{action}(session=session, actor=actor, user_id=target.id, **{arguments!r})
""",
    )


def test_a_reload_keeps_the_user_signed_in_and_the_cookie_names_nobody(page, studio_url):
    log_in(page, studio_url, username="mia", password=MEMBER_PASSWORD)
    [cookie] = [c for c in stored_cookies(page) if c["name"] == COOKIE_NAME]
    assert "mia" not in cookie["value"] and not cookie["value"].startswith("eyJ")  # opaque, not a JWT
    assert cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    page.reload()
    wait_for_idle(page)
    assert_signed_in(page)
    assert page.get_by_text("(mia, member)").count() == 1
    page.get_by_role("button", name="Log out").click()  # the first click after a reload counts
    assert_only_the_login_form(page)


def test_copied_cookies_open_the_studio_until_the_user_logs_out(page, studio_url, browser):
    log_in(page, studio_url, username="mia", password=MEMBER_PASSWORD)
    copied = stored_cookies(page)
    elsewhere = open_with(browser, studio_url, copied)
    assert_signed_in(elsewhere)
    elsewhere.context.close()

    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Login").wait_for()
    replayed = open_with(browser, studio_url, copied)
    assert_only_the_login_form(replayed)
    replayed.context.close()


@pytest.mark.parametrize(
    ("action", "arguments"),
    [("reset_password", {"new_password": "a-new-password-1"}), ("set_active", {"active": False})],
    ids=["password-reset", "deactivation"],
)
def test_copied_cookies_give_the_login_form_after_an_admin_ends_the_account_s_sessions(
    page, studio_url, studio_env, browser, action, arguments
):
    username = f"leo-{action.replace('_', '-')}"
    add_user(studio_env, username, "leo-password")
    log_in(page, studio_url, username=username, password="leo-password")
    copied = stored_cookies(page)
    admin_does(studio_env, action, username, **arguments)
    replayed = open_with(browser, studio_url, copied)
    assert_only_the_login_form(replayed)
    replayed.context.close()
    page.reload()  # the browser that signed in is signed out too
    wait_for_idle(page)
    assert_only_the_login_form(page)
