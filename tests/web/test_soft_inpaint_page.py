"""Soft inpainting (per-pixel strength) from the Inpaint and Sweep pages: an uploaded grey mask's values reach the
job (InpaintParams.soft, the stored mask) and the result; the canvas brush's opacity is the strength it paints."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from sqlmodel import select

from pipelines.masks import mask_from_canvas
from studio.db.engine import session_for
from studio.db.tables import Asset, Job, JobStatus
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.web.masks import MAX_OPACITY, MIN_OPACITY, OPACITY_STEP, brush_colour
from tests.support import ADMIN_PASSWORD, log_in, png_bytes, texts

SIDE = 256
GREY = 128  # the strength the test mask asks for in its box: about half


def grey_mask_png() -> bytes:
    mask = Image.new("L", (SIDE, SIDE), 0)
    mask.paste(GREY, (64, 64, 192, 192))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def stored(settings, sha256: str) -> np.ndarray:
    with Image.open(io.BytesIO(AssetStore(settings.assets_dir).read(sha256))) as image:
        return np.asarray(image)


@pytest.mark.parametrize("page", ["inpaint", "sweep"])
def test_a_grey_mask_uploaded_with_soft_on_keeps_its_values_and_changes_only_where_it_is_not_black(
    studio, studio_settings, page
):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page(f"pages/{page}.py").run()
    at.file_uploader(key=f"{page}.source_upload").set_value(("shoe.png", png_bytes(SIDE, SIDE), "image/png")).run()
    if page == "sweep":
        at.toggle(key="sweep.inpaint").set_value(True).run()
    at.toggle(key=f"{page}.soft").set_value(True).run()
    at.file_uploader(key=f"{page}.mask_upload").set_value(("mask.png", grey_mask_png(), "image/png")).run()
    at.text_area(key=f"{page}.prompt").input("a red sneaker")
    at.slider(key=f"{page}.steps").set_value(4)
    at.toggle(key=f"{page}.keep_unmasked").set_value(True)
    at.slider(key=f"{page}.mask_blur").set_value(0)
    if page == "sweep":
        at.segmented_control(key="sweep.mode").set_value("List").run()
        at.text_input(key="sweep.strength_list").input("0.5, 1.0").run()
    else:
        at.slider(key="inpaint.strength").set_value(1.0)
    at.run()
    assert not at.exception, at.exception
    assert any("fainter" in caption for image in at.image for caption in image.captions)  # the overlay explains
    at.button(key=f"{page}_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    worker = Worker(studio_settings, name="soft-worker")
    while worker.run_once() is not None:
        pass
    with session_for(studio_settings.database_url) as session:
        jobs = session.exec(select(Job).order_by(Job.id)).all()
        masks = {session.get(Asset, job.mask_asset_id).sha256 for job in jobs}
        sources = {session.get(Asset, job.source_asset_id).sha256 for job in jobs}
        results = [session.get(Asset, job.result_asset_id).sha256 for job in jobs]
    assert jobs and all(job.status is JobStatus.complete for job in jobs), [job.error for job in jobs]
    assert all(job.params["inpaint"]["soft"] for job in jobs)
    [mask_sha] = masks
    mask = stored(studio_settings, mask_sha)
    assert set(np.unique(mask)) == {0, GREY}  # the grey level reached the job, not a thresholded 255
    [source_sha] = sources
    source = stored(studio_settings, source_sha)
    for result_sha in results:
        result = stored(studio_settings, result_sha)
        keep = mask == 0
        assert np.array_equal(result[keep], source[keep])  # value 0: unchanged byte for byte
        assert not np.array_equal(result[~keep], source[~keep])  # the grey box changed


def test_soft_off_reads_the_same_grey_mask_as_binary(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/inpaint.py").run()
    at.file_uploader(key="inpaint.source_upload").set_value(("shoe.png", png_bytes(SIDE, SIDE), "image/png")).run()
    at.file_uploader(key="inpaint.mask_upload").set_value(("mask.png", grey_mask_png(), "image/png")).run()
    at.text_area(key="inpaint.prompt").input("a red sneaker")
    at.slider(key="inpaint.steps").set_value(4).run()
    at.button(key="inpaint_button").click().run()
    assert not at.error, texts(at.error)
    with session_for(studio_settings.database_url) as session:
        [job] = session.exec(select(Job)).all()
        mask = stored(studio_settings, session.get(Asset, job.mask_asset_id).sha256)
    assert "soft" not in job.params["inpaint"]  # a binary run's options read exactly as before soft existed
    assert set(np.unique(mask)) == {0, 255}  # 128 is above the threshold: painted


@pytest.mark.parametrize("opacity", range(MIN_OPACITY, MAX_OPACITY + 1, OPACITY_STEP))
def test_a_soft_brush_paints_its_opacity_as_the_strength(opacity):
    """What the canvas returns for one stroke of the soft brush (its CSS colour drawn over nothing) reads back as
    that strength."""
    red, green, blue, alpha = (float(part) for part in re.findall(r"[\d.]+", brush_colour(opacity)))
    drawing = np.zeros((8, 8, 4), np.uint8)
    drawing[2:6, 2:6] = (red, green, blue, round(alpha * 255))
    mask = np.asarray(mask_from_canvas(drawing, (8, 8), soft=True))
    assert abs(int(mask[3, 3]) - round(opacity / 100 * 255)) <= 1 and mask[0, 0] == 0
