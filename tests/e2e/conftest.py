"""A real studio and a real browser: README's `python -m studio serve` on a free loopback port against a
temporary data folder, driven by Debian's chromium through Playwright (never a downloaded browser build).

Journeys save a screenshot each into test-artifacts/e2e/ (git-ignored) to look at after a run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ADMIN_PASSWORD = "e2e-admin-password"
MEMBER_PASSWORD = "e2e-member-password"
START_TIMEOUT_S = 120
# A first run imports torch and diffusers and builds the tiny models; on 2 busy cores that takes a while.
RUN_TIMEOUT_MS = 180_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int) -> list[str]:
    """README's command to serve the studio, on `port` of the loopback interface (bench/served.py uses it too)."""
    return [sys.executable, "-m", "studio", "serve", "--port", str(port), "--address", "127.0.0.1"]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> bool:
    """Wait until the studio at `url` answers Streamlit's health check; False if `server` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


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


def run_in_studio(env: dict[str, str], code: str) -> None:
    """Run Python `code` against the served studio's data (its settings come from `env`)."""
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True, timeout=120)


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


def wait_for_idle(page) -> None:
    """Wait until the app's script run is over, as Streamlit's own e2e suite does (stApp's script state)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached")
    page.wait_for_timeout(300)  # let the last delta paint


def log_in(page, url: str, username: str = "admin", password: str = ADMIN_PASSWORD, *, expect: str = "Transform"):
    """Log in through the form, once, as a person does; waits for the page a person lands on (`expect`: an h1 or a
    text). The form keeps what was typed on the first try (studio.web.auth.login_page runs it as a page)."""
    page.goto(url)
    wait_for_idle(page)
    page.get_by_label("Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_text(expect, exact=True).first.wait_for()
    wait_for_idle(page)


def go_to(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).click()
    page.wait_for_selector(f"h1:has-text('{title}')")
    wait_for_idle(page)
