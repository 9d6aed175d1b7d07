"""The Inpaint page (upload-a-mask path) and styles and recipes on the Transform page, through AppTest.

The mask canvas is a custom component AppTest cannot draw on; the browser tests exercise it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from studio.db.engine import session_for
from studio.db.tables import Asset, JobStatus
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from tests.support import ADMIN_PASSWORD, all_jobs, log_in, mask_png, png_bytes, result_pixels, texts


def test_inpaint_with_an_uploaded_mask_repaints_only_the_mask(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/inpaint.py").run()
    assert at.title[0].value == "Inpaint"
    source = png_bytes(256, 320)
    at.file_uploader(key="inpaint.source_upload").set_value(("shoe.png", source, "image/png")).run()
    assert not at.exception, at.exception
    assert at.button(key="inpaint_button").disabled  # no mask yet
    assert any("Paint over the area" in i for i in texts(at.info))

    # An empty mask is refused with a clear message, and nothing can be submitted.
    at.file_uploader(key="inpaint.mask_upload").set_value(("mask.png", mask_png((256, 320), None), "image/png")).run()
    assert any("The mask is empty" in e for e in texts(at.error))
    assert at.button(key="inpaint_button").disabled

    # A mask of another size (half) is fitted to the image.
    half = mask_png(size=(128, 160), box=(20, 30, 75, 100), mode="RGB")
    at.file_uploader(key="inpaint.mask_upload").set_value(("mask.png", half, "image/png")).run()
    assert not at.error, texts(at.error)
    at.text_area(key="inpaint.prompt").input("a blue patch")
    at.slider(key="inpaint.steps").set_value(4)
    at.slider(key="inpaint.mask_blur").set_value(0)
    at.number_input(key="inpaint.seed").set_value(5)
    at.run()
    assert any("Costs **1** credit" in c for c in texts(at.caption))
    at.button(key="inpaint_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    [job] = all_jobs(studio_settings)
    assert job.task == "inpaint" and job.mask_asset_id is not None
    Worker(studio_settings, name="test-worker").run_once()
    at.run()
    [job] = all_jobs(studio_settings)
    assert job.status is JobStatus.complete, job.error
    result = result_pixels(studio_settings, job)
    original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
    inside = np.zeros(original.shape[:2], bool)
    inside[60:202, 40:152] = True  # the half-size box (20..75, 30..100) scaled ×2, nearest
    assert result.shape == original.shape
    assert np.array_equal(result[~inside], original[~inside])
    assert not np.array_equal(result[inside], original[inside])
    assert [b.label for b in at.get("download_button")] == ["Download PNG"]


def test_a_style_a_result_png_and_re_running_its_recipe_identically(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png")).run()
    at.selectbox(key="transform.style").set_value("quality-enhancement").run()
    assert at.slider(key="transform.strength").value == 0.25  # the style's default strength
    at.text_area(key="transform.prompt").input("a sneaker")
    at.slider(key="transform.strength").set_value(0.5)
    at.slider(key="transform.steps").set_value(4)
    at.run()
    assert any("Costs **2** credits" in c for c in texts(at.caption))
    at.button(key="transform_button").click().run()
    assert not at.error, texts(at.error)
    Worker(studio_settings, name="test-worker").run_once()

    [first] = all_jobs(studio_settings)
    assert first.status is JobStatus.complete and first.style == "quality-enhancement"
    with session_for(studio_settings.database_url) as session:
        result_png = AssetStore(studio_settings.assets_dir).read(session.get(Asset, first.result_asset_id).sha256)

    # Upload the result: the studio recognises its recipe and offers to re-run it exactly.
    at.file_uploader(key="transform.source_upload").set_value(("result.png", result_png, "image/png")).run()
    assert any("made in the studio" in md for md in texts(at.markdown))
    at.button(key="transform.load_recipe").click().run()
    assert at.selectbox(key="transform.style").value == "quality-enhancement"
    assert at.text_area(key="transform.prompt").value == "a sneaker"
    assert at.number_input(key="transform.seed").value == first.params["seed"]
    at.button(key="transform.rerun").click().run()
    assert not at.error, texts(at.error)
    Worker(studio_settings, name="test-worker").run_once()

    first, rerun = all_jobs(studio_settings)
    assert rerun.status is JobStatus.complete, rerun.error
    assert (
        rerun.source_asset_id == first.source_asset_id or rerun.recipe["source_sha256"] == first.recipe["source_sha256"]
    )
    assert np.array_equal(result_pixels(studio_settings, first), result_pixels(studio_settings, rerun))
