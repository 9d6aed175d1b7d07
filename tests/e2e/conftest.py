"""A real studio and a real browser: README's `python -m studio serve` on a free loopback port against a
temporary data folder, driven by Debian's chromium through Playwright (never a downloaded browser build).

Journeys save a screenshot each into test-artifacts/e2e/ (git-ignored) to look at after a run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.support import (
    ADMIN_PASSWORD,
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    MEMBER_PASSWORD,
    REPO_ROOT,
    RUN_TIMEOUT_MS,
    free_port,
    run_in_studio,
    serve_command,
    wait_healthy,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def studio_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the studio is served with: its own data folder, an admin and a member account."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does) to run the browser tests")
    pytest.importorskip("playwright.sync_api", reason="Playwright's python package is not installed")
    data = tmp_path_factory.mktemp("e2e-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")} | {
        "STUDIO_DATA_DIR": str(data),
        "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "STUDIO_WARMUP": "1",
        "STUDIO_IN_PROCESS_WORKER": "1",
        "OMP_NUM_THREADS": "1",
    }
    run_in_studio(env, _ADD_MEMBER.format(password=MEMBER_PASSWORD))
    return env


@pytest.fixture(scope="session")
def studio_url(studio_env: dict[str, str]) -> Iterator[str]:
    """A running studio with an admin and a member account, its own data folder and its own queue worker."""
    env, data = studio_env, Path(studio_env["STUDIO_DATA_DIR"])
    port = free_port()
    log = (data / "streamlit.log").open("w")
    # README's command; .streamlit/config.toml supplies the rest (headless, no file watcher, no post-run GC).
    server = subprocess.Popen(serve_command(port), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(url, server):
            raise RuntimeError(f"streamlit did not start:\n{(data / 'streamlit.log').read_text()[-3000:]}")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# The member, and credits for every journey the suite takes (a new account has 10 trial credits).
_ADD_MEMBER = """
from studio.accounts.bootstrap import bootstrap
from studio.config import get_settings
from studio.billing.credits import Account, add_credits
from studio.db.engine import write_session
from studio.db.tables import CreditKind, utcnow
from studio.accounts.users import create_user, get_user
settings = get_settings()
bootstrap(settings)
with write_session(settings.database_url) as session:
    create_user(session=session, username="mia", password="{password}", email="mia@example.com")
    for name in ("admin", "mia"):
        account = Account(user_id=get_user(session=session, username=name).id)
        add_credits(session=session, account=account, amount=1000, kind=CreditKind.grant, now=utcnow(), reason="e2e")
    session.commit()
"""


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser context (no cookies) per test; a screenshot of where it ended, pass or fail."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
