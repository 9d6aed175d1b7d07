"""What the browser journeys share: the served studio's command and health check, running code against its data,
and a person's moves in the browser (log in, open a page, wait for Streamlit to finish a run). Fixtures are in
conftest.py; tests and bench/served.py import these.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def run_in_studio(env: dict[str, str], code: str) -> None:
    """Run Python `code` against the served studio's data (its settings come from `env`)."""
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True, timeout=120)


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


def paint_stroke(page, *, dy: int = 3) -> None:
    """A stroke across the middle of the picture on the Inpaint canvas (which shows it at 512 px wide): canvas x
    180–332, y 160 to 160 + 19 × dy."""
    box = page.locator("canvas").last.bounding_box()
    page.mouse.move(box["x"] + 180, box["y"] + 160)
    page.mouse.down()
    for step in range(20):
        page.mouse.move(box["x"] + 180 + step * 8, box["y"] + 160 + step * dy)
    page.mouse.up()


def sweep_strengths(page, strengths: str) -> None:
    """Type a list of strengths into the Sweep page's form."""
    page.get_by_text("List", exact=True).click()
    wait_for_idle(page)
    field = page.get_by_role("textbox", name="Strengths")
    field.fill(strengths)
    field.press("Enter")
    wait_for_idle(page)
