"""One image library in a real browser: upload once on Transform, open the result in Inpaint and then Sweep without
uploading again, expand it to a 16:9 web banner, and compare with the source (issue 22's journey)."""

from __future__ import annotations

import re

from tests.e2e.support import go_to, log_in, paint_stroke, sweep_strengths, wait_for_idle
from tests.e2e.test_every_path import no_traceback, pick
from tests.e2e.test_journeys import source_png


def open_result_in(page, destination: str, heading: str) -> None:
    """*Open in* on the result beside the form, then the destination's button; waits for its page."""
    page.get_by_role("button", name=re.compile(r"Open in$")).last.click()
    page.get_by_role("button", name=re.compile(rf"{destination}$")).last.click()
    page.wait_for_selector(f"h1:has-text('{heading}')")
    wait_for_idle(page)


def run_and_wait(page, button: str) -> None:
    page.get_by_label("Prompt", exact=True).fill("a watercolor product shot")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    page.get_by_role("button", name=re.compile(button)).click()
    page.wait_for_selector("text=Download PNG")
    wait_for_idle(page)


def test_upload_once_then_inpaint_sweep_expand_and_compare_without_uploading_again(page, studio_url, tmp_path):
    path, _ = source_png(tmp_path, 320, 256)
    log_in(page, studio_url)
    page.locator("input[type=file]").first.set_input_files(path)  # the only upload of the journey
    page.wait_for_selector("text=source-320x256.png · 320×256")
    run_and_wait(page, r"^Transform · \d+ denoising steps")

    open_result_in(page, "Inpaint", "Inpaint")
    assert page.locator("input[type=file]").first.input_value() == ""  # nothing uploaded on this page
    page.wait_for_selector("text=Paint the mask")  # the mask editor has its source: the Transform result
    paint_stroke(page)
    page.wait_for_selector("text=What will be repainted")
    run_and_wait(page, r"^Inpaint · ")

    open_result_in(page, "Sweep", "Strength sweep")
    page.wait_for_selector("text=/img2img-\\d+\\.png · 320×256/")  # the Inpaint result is the sweep's source
    page.get_by_label("Prompt", exact=True).fill("a pencil sketch")
    sweep_strengths(page, "0.3, 0.6")
    page.get_by_role("button", name="Run sweep · 2 cells").click()
    page.wait_for_selector("text=Download grid")

    go_to(page, "Expand")  # the source follows the user here too: the Inpaint result
    assert page.locator("input[type=file]").first.input_value() == ""
    pick(page, "Format", "Web banner (16:9)")
    page.wait_for_selector("text=/\\d+×256 · the tinted area is painted by the model/")  # wider, as tall
    run_and_wait(page, r"^Expand · \d+ denoising steps")
    no_traceback(page)

    go_to(page, "Compare")  # the result the user works on, beside its source
    page.wait_for_selector("text=/^result #\\d+$/")
    no_traceback(page)
    assert page.locator("[data-testid='stImage']").count() >= 2
    assert page.get_by_text("source", exact=True).count() >= 1
