"""Journeys through the studio in a real browser, as a person takes them (see conftest.py)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.support import (
    MEMBER_PASSWORD,
    go_to,
    log_in,
    paint_stroke,
    run_in_studio,
    sweep_strengths,
    wait_for_idle,
)


def source_png(tmp_path, width: int, height: int) -> tuple[str, np.ndarray]:
    """A structured test photo saved as PNG; returns its path and pixels."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    pixels[::16] = (30, 30, 30)
    path = tmp_path / f"source-{width}x{height}.png"
    Image.fromarray(pixels, "RGB").save(path)
    return str(path), pixels


def download(page, button_name: str) -> bytes:
    with page.expect_download() as pending:
        page.get_by_role("button", name=button_name).first.click()
    return pending.value.path().read_bytes()


def test_a_wrong_password_is_refused_and_the_right_one_opens_the_studio(page, studio_url):
    log_in(page, studio_url, password="not-the-password", expect="Username or password is incorrect.")
    assert page.locator("h1:has-text('Transform')").count() == 0
    log_in(page, studio_url)
    assert page.get_by_text("Signed in as").is_visible()


def test_transform_shows_progress_and_the_result_downloads_with_its_recipe(page, studio_url, tmp_path):
    path, _ = source_png(tmp_path, 1024, 768)  # large enough that the run takes a few polls
    log_in(page, studio_url)
    page.locator("input[type=file]").first.set_input_files(path)
    page.wait_for_selector("text=source-1024x768.png · 1024×768")
    page.get_by_label("Prompt", exact=True).fill("a watercolor landscape")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    page.get_by_role("button", name=re.compile(r"^Transform · \d+ denoising steps")).click()
    page.wait_for_selector("[data-testid='stProgress']")  # queued, then a bar per step
    page.wait_for_selector("text=Download PNG")
    png = download(page, "Download PNG")
    with Image.open(io.BytesIO(png)) as result:
        assert result.size == (1024, 768)
        assert "img2img-studio:recipe" in result.info


def test_inpaint_a_painted_stroke_leaves_pixels_outside_the_mask_unchanged(page, studio_url, tmp_path):
    path, pixels = source_png(tmp_path, 320, 256)
    log_in(page, studio_url)
    go_to(page, "Inpaint")
    page.locator("input[type=file]").first.set_input_files(path)
    page.wait_for_selector("text=Paint the mask")
    wait_for_idle(page)
    paint_stroke(page)
    page.wait_for_selector("text=What will be repainted")
    page.get_by_label("Prompt", exact=True).fill("a blue patch")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    page.get_by_role("button", name=re.compile(r"^Inpaint · ")).click()
    page.wait_for_selector("text=Download PNG")
    result = np.asarray(Image.open(io.BytesIO(download(page, "Download PNG"))).convert("RGB"))
    assert result.shape == pixels.shape
    # The stroke covers canvas x 180–340, y 160–220 (÷1.6 in the image) plus a 30 px brush; mask blur 4.
    far = np.ones(pixels.shape[:2], bool)
    far[60:180, 70:260] = False
    assert np.array_equal(result[far], pixels[far])
    assert not np.array_equal(result[~far], pixels[~far])


def test_a_soft_brush_paints_its_opacity_as_the_strength_the_job_gets(page, studio_url, studio_env, tmp_path):
    """Soft (per-pixel strength): a 50 % brush stroke reaches the job as a grey mask (about 128), not as 255."""
    path, pixels = source_png(tmp_path, 320, 256)
    log_in(page, studio_url)
    go_to(page, "Inpaint")
    page.locator("input[type=file]").first.set_input_files(path)
    page.wait_for_selector("text=Paint the mask")
    page.get_by_text("Soft (per-pixel strength)").click()
    page.wait_for_selector("text=Brush strength (%)")
    wait_for_idle(page)
    paint_stroke(page, dy=0)
    page.wait_for_selector("text=What will be repainted (fainter: changes less)")
    page.get_by_label("Prompt", exact=True).fill("a blue patch")
    page.keyboard.press("Tab")
    wait_for_idle(page)
    page.get_by_role("button", name=re.compile(r"^Inpaint · ")).click()
    page.wait_for_selector("text=Download PNG")
    result = Image.open(io.BytesIO(download(page, "Download PNG")))
    recipe = json.loads(result.info["img2img-studio:recipe"])
    assert recipe["inpaint"]["soft"] is True
    stored = next(Path(studio_env["STUDIO_DATA_DIR"]).rglob(recipe["mask_sha256"] + "*"))
    mask = np.asarray(Image.open(stored))
    # The stroke's middle (canvas y 160 → image y 100) holds the brush's strength, not a thresholded 255.
    assert abs(int(np.median(mask[100, 120:200])) - 128) <= 8 and mask.max() < 200 and mask[0, 0] == 0
    far = np.ones(pixels.shape[:2], bool)
    far[70:130, 90:240] = False
    assert np.array_equal(np.asarray(result.convert("RGB"))[far], pixels[far])


def test_a_sweep_of_three_strengths_fills_its_grid_and_compare_slides(page, studio_url, tmp_path):
    path, _ = source_png(tmp_path, 320, 256)
    log_in(page, studio_url)
    go_to(page, "Sweep")
    page.locator("input[type=file]").first.set_input_files(path)
    page.get_by_label("Prompt", exact=True).fill("a pencil sketch")
    sweep_strengths(page, "0.3, 0.6, 0.9")
    page.get_by_role("button", name="Run sweep · 3 cells").click()
    page.wait_for_selector("text=Download grid")
    assert page.get_by_role("button", name="Enlarge").count() == 3
    page.wait_for_selector("[data-testid='stPlotlyChart']")  # structure-kept scores vs strength

    go_to(page, "Compare")
    page.get_by_text("Slider", exact=True).click()
    wait_for_idle(page)
    before = page.locator("[data-testid='stImage'] img").first.get_attribute("src")
    page.get_by_role("slider").last.focus()
    for _ in range(10):
        page.keyboard.press("ArrowLeft")
    from playwright.sync_api import expect

    # The split is drawn on the server: a new image arrives once the slider's rerun is done.
    expect(page.locator("[data-testid='stImage'] img").first).not_to_have_attribute("src", before, timeout=60_000)


def test_a_member_cannot_reach_admin_pages_by_url(page, studio_url):
    log_in(page, studio_url, username="mia", password=MEMBER_PASSWORD)
    page.wait_for_selector("h1:has-text('Transform')")
    assert page.get_by_role("link", name="Users", exact=True).count() == 0
    for path in ("admin_users", "analytics"):
        page.goto(f"{studio_url}/{path}")
        wait_for_idle(page)
        assert page.locator("h1:has-text('Users'), h1:has-text('Analytics')").count() == 0
        assert page.locator("[data-testid='stPlotlyChart']").count() == 0


# A few days of history for the charts, so the journey does not depend on the jobs other journeys ran before it.
_SEED_USAGE = """
from studio.config import get_settings
from studio.db.engine import get_engine
from studio.devtools.seed import SeedError, SeedOptions, seed
settings = get_settings()
options = SeedOptions(users=5, teams=2, jobs=200, days=5)
try:
    seed(engine=get_engine(settings.database_url), settings=settings, options=options)
except SeedError:
    pass  # seeded by an earlier run of this journey
"""


def test_an_admin_sees_the_usage_charts(page, studio_url, studio_env):
    run_in_studio(studio_env, _SEED_USAGE)
    log_in(page, studio_url)
    if page.get_by_role("link", name="Analytics", exact=True).count() == 0:
        pytest.fail("The Analytics page is not in the admin navigation")
    go_to(page, "Analytics")
    page.wait_for_selector("[data-testid='stPlotlyChart']")
    assert page.locator("[data-testid='stPlotlyChart']").count() >= 2
