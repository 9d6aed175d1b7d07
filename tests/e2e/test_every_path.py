"""In a real browser: every style of the shipped catalogue on Transform, what a user leaves behind when they log
out, a login cookie of a deactivated account, and History's cards at a laptop's width."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import jwt
import pytest

from pipelines.families import FAMILIES
from studio.catalogue.styles import load_catalogue
from studio.config import PROJECT_ROOT
from tests.e2e.conftest import MEMBER_PASSWORD, go_to, log_in, run_in_studio, wait_for_idle
from tests.e2e.test_journeys import source_png

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
OWN_SETTINGS_LABEL = "Your own prompt and settings"
COOKIE_NAME = "img2img_studio_auth"  # the default STUDIO_COOKIE_NAME


def no_traceback(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.locator("[data-testid='stException']")


def pick(page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_idle(page)


def source_side(style_id: str | None) -> int:
    """256 px, or the smallest source the style's model family takes (SDXL: 512)."""
    style = CATALOGUE.styles.get(style_id) if style_id is not None else None
    if style is None or style.task.upscale_factor is not None:
        return 256
    return max(256, FAMILIES[CATALOGUE.models[style.model].family].min_side)


@pytest.mark.parametrize("style_id", [None, *CATALOGUE.styles], ids=lambda style_id: style_id or "own-settings")
def test_every_style_transforms_in_the_browser(page, studio_url, tmp_path, style_id):
    side = source_side(style_id)
    path, _ = source_png(tmp_path, side, side)
    log_in(page, studio_url)
    page.locator("input[type=file]").first.set_input_files(path)
    page.wait_for_selector(f"text=source-{side}x{side}.png · {side}×{side}")
    wait_for_idle(page)
    if style_id is None:
        label = OWN_SETTINGS_LABEL
    else:
        style = CATALOGUE.styles[style_id]
        label = f"{style.name} · {style.credits} cr"
    if style_id is not None:
        pick(page, "Style", label)
    no_traceback(page)
    page.get_by_role("textbox", name=re.compile(r"^Prompt")).first.fill("a red sneaker on a table")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    if style_id is not None and CATALOGUE.styles[style_id].task.upscale_factor:
        # An upscale runs every step at the source's full resolution: one step keeps the journey short.
        page.get_by_text("Advanced", exact=True).click()
        page.get_by_role("slider", name="Steps").press("Home")
        wait_for_idle(page)
    no_traceback(page)
    page.get_by_role("button", name=re.compile(r"^(Transform|Upscale \d×) · \d+ denoising steps")).click()
    page.wait_for_selector("text=Download PNG")
    no_traceback(page)
    assert page.locator("[data-testid='stAlertContentError']").count() == 0


def test_after_log_out_the_next_person_finds_empty_forms(page, studio_url, tmp_path):
    path, _ = source_png(tmp_path, 256, 256)
    log_in(page, studio_url)
    page.locator("input[type=file]").first.set_input_files(path)
    page.wait_for_selector("text=source-256x256.png · 256×256")
    page.get_by_role("textbox", name="Prompt", exact=True).fill("the admin's confidential campaign")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    page.get_by_role("button", name="Log out").click()
    log_in(page, studio_url, username="mia", password=MEMBER_PASSWORD)
    page.wait_for_selector("h1:has-text('Transform')")
    no_traceback(page)
    assert page.get_by_role("textbox", name="Prompt", exact=True).input_value() == ""
    assert page.get_by_text("source-256x256.png").count() == 0
    assert page.get_by_text("confidential").count() == 0


def _login_cookie(studio_env: dict[str, str], username: str) -> dict:
    """A login cookie for `username`, signed as the studio signs them (streamlit-authenticator's JWT)."""
    key = (Path(studio_env["STUDIO_DATA_DIR"]) / "secrets" / "cookie_key").read_text().strip()
    token = jwt.encode({"username": username, "exp_date": time.time() + 3600}, key, algorithm="HS256")
    return {"name": COOKIE_NAME, "value": token, "domain": "127.0.0.1", "path": "/"}


def test_a_deactivated_accounts_login_cookie_gets_the_login_form(page, studio_url, studio_env):
    run_in_studio(
        studio_env,
        """
from studio.config import get_settings
from studio.db.engine import write_session
from studio.accounts.users import create_user, get_user
settings = get_settings()
with write_session(settings.database_url) as session:
    if get_user(session=session, username="leo") is None:
        create_user(session=session, username="leo", password="leo-password", email="leo@example.com")
""",
    )
    page.context.add_cookies([_login_cookie(studio_env, "leo")])
    page.goto(studio_url)
    page.wait_for_selector("h1:has-text('Transform')")  # the cookie signs leo in
    run_in_studio(
        studio_env,
        """
from studio.config import get_settings
from studio.db.engine import write_session
from studio.accounts.users import get_user
settings = get_settings()
with write_session(settings.database_url) as session:
    leo = get_user(session=session, username="leo")
    leo.is_active = False
    session.add(leo)
    session.commit()
""",
    )
    fresh = page.context.browser.new_context()
    fresh.add_cookies([_login_cookie(studio_env, "leo")])
    other = fresh.new_page()
    other.goto(studio_url)
    wait_for_idle(other)
    other.get_by_role("button", name="Login").wait_for()
    assert other.locator("[data-testid='stException']").count() == 0
    assert other.locator("h1:has-text('Transform')").count() == 0
    fresh.close()


def test_history_cards_show_their_buttons_whole_at_a_laptops_width(page, studio_url, tmp_path):
    path, _ = source_png(tmp_path, 256, 256)
    log_in(page, studio_url)  # the browser window is 1400 px wide (conftest)
    page.locator("input[type=file]").first.set_input_files(path)
    page.wait_for_selector("text=source-256x256.png · 256×256")
    page.get_by_role("textbox", name="Prompt", exact=True).fill("a red sneaker")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    page.get_by_role("button", name=re.compile(r"^Transform · ")).click()
    page.wait_for_selector("text=Download PNG")
    go_to(page, "History")
    page.get_by_role("button", name="Remix").first.wait_for()
    labels = page.locator("[data-testid='stMain'] button p").evaluate_all(
        "ps => ps.map(p => ({text: p.textContent, cut: p.scrollWidth > p.clientWidth + 1}))"
    )
    shown = {label["text"] for label in labels}
    assert {"Download", "Remix", "Delete"} <= shown, json.dumps(labels)
    assert not [label for label in labels if label["cut"]], json.dumps(labels)
    assert page.get_by_text(re.compile(r"\d+ of \d+ steps")).count() >= 1
