"""In a real browser: every style of the shipped catalogue on Transform (the editors' on Edit), what a user leaves
behind when they log out, and History's cards at a laptop's width (signing in and its cookies: test_sessions.py)."""

from __future__ import annotations

import json
import re

import pytest

from pipelines.families import FAMILIES
from studio.catalogue.styles import load_catalogue
from studio.config import PROJECT_ROOT
from studio.web.styles import EDIT_PAGE, offered_styles
from tests.e2e.support import MEMBER_PASSWORD, go_to, log_in, wait_for_idle
from tests.e2e.test_journeys import source_png

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
OWN_SETTINGS_LABEL = "Your own prompt and settings"


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


STYLE_CASES = [pytest.param("Transform", None, id="own-settings")] + [
    pytest.param(page_title, style.id, id=style.id)
    for page_title, prefix in (("Transform", "transform"), ("Edit", EDIT_PAGE))
    for style in offered_styles(CATALOGUE, prefix)
]


@pytest.mark.parametrize(("page_title", "style_id"), STYLE_CASES)
def test_every_style_transforms_in_the_browser(page, studio_url, tmp_path, page_title, style_id):
    side = source_side(style_id)
    path, _ = source_png(tmp_path, side, side)
    log_in(page, studio_url)
    if page_title != "Transform":
        go_to(page, page_title)
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
    page.get_by_role("textbox", name=re.compile(r"^(Prompt|Instruction)")).first.fill("a red sneaker on a table")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    if style_id is not None and CATALOGUE.styles[style_id].task.upscale_factor:
        # An upscale runs every step at the source's full resolution: one step keeps the journey short.
        page.get_by_text("Advanced", exact=True).click()
        page.get_by_role("slider", name="Steps").press("Home")
        wait_for_idle(page)
    no_traceback(page)
    page.get_by_role("button", name=re.compile(r"^(Transform|Upscale \d×|Edit) · \d+ denoising steps")).click()
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
