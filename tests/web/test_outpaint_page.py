"""The Expand page (outpainting to a format) and the Batch page's format and per-image masks, through AppTest."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sqlmodel import select

from pipelines.outpaint import plan_outpaint, preset_params
from pipelines.params import Placement
from studio.accounts.users import get_user
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, JobStatus, Plan
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from tests.support import ADMIN_PASSWORD, all_jobs, log_in, mask_png, png_bytes, result_pixels, texts, zip_of


def assets(settings) -> int:
    with session_for(settings.database_url) as session:
        return len(session.exec(select(Asset)).all())


def test_expand_a_photo_to_a_story_with_the_source_kept_exactly(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/outpaint.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Expand"
    assert at.button(key="outpaint_button").disabled  # no source yet
    source = png_bytes(256, 320)
    at.file_uploader(key="outpaint.source_upload").set_value(("shoe.png", source, "image/png")).run()
    assert not at.exception, at.exception
    at.text_area(key="outpaint.prompt").input("a bright studio").run()
    # The first preset (Instagram post, 1:1): the canvas and its price, before anything is submitted.
    assert any("320×320" in image.captions[0] for image in at.image if image.captions)
    assert any("Costs **1** credit" in c for c in texts(at.caption))

    # A custom size smaller than the source: said so, and nothing can be submitted.
    at.selectbox(key="outpaint.format").set_value("custom").run()
    at.number_input(key="outpaint.canvas_width").set_value(1080)
    at.number_input(key="outpaint.canvas_height").set_value(300).run()
    assert any("its height 300 px is less than the source's 320" in e for e in texts(at.error)), texts(at.error)
    assert at.button(key="outpaint_button").disabled
    assert all_jobs(studio_settings) == [] and assets(studio_settings) == 0

    # The story preset, the source at the top.
    at.selectbox(key="outpaint.format").set_value("story").run()
    at.segmented_control(key="outpaint.placement").set_value("top").run()
    at.slider(key="outpaint.steps").set_value(2)
    at.number_input(key="outpaint.seed").set_value(5).run()
    assert not at.error, texts(at.error)
    assert any("256×456" in image.captions[0] for image in at.image if image.captions)
    at.button(key="outpaint_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    [job] = all_jobs(studio_settings)
    assert job.task == "inpaint" and job.mask_asset_id is None
    assert job.params["outpaint"] == {
        "aspect": "9:16",
        "width": 0,
        "height": 0,
        "placement": "top",
        "fill": "blur",
        "seam": 8,
    }
    Worker(studio_settings, name="test-worker").run_once()
    at.run()
    [job] = all_jobs(studio_settings)
    assert job.status is JobStatus.complete, job.error
    result = result_pixels(studio_settings, job)
    original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
    plan = plan_outpaint(256, 320, preset_params("story", placement=Placement.top))
    left, top, right, bottom = plan.kept_box
    assert result.shape == (456, 256, 3) and plan.box == (0, 0, 256, 320)
    assert result[top:bottom, left:right].tobytes() == original[top:bottom, left:right].tobytes()
    assert [b.label for b in at.get("download_button")] == ["Download PNG"]

    # The result PNG carries its recipe: *Re-run identically* expands the original source again, the same pixels.
    with session_for(studio_settings.database_url) as session:
        result_sha = session.get(Asset, job.result_asset_id).sha256
    result_png = AssetStore(studio_settings.assets_dir).read(result_sha)
    at.file_uploader(key="outpaint.source_upload").set_value(("story.png", result_png, "image/png")).run()
    at.button(key="outpaint.rerun").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    Worker(studio_settings, name="test-worker").run_once()
    first, again = all_jobs(studio_settings)
    assert again.status is JobStatus.complete, again.error
    assert again.params == first.params
    with session_for(studio_settings.database_url) as session:
        sources = {session.get(Asset, job.source_asset_id).sha256 for job in (first, again)}
        assert len(sources) == 1  # the original photo, not the uploaded result
        assert session.get(Asset, again.result_asset_id).sha256 == result_sha

    # *Load its settings* puts the format back into the form, with the prompt and the rest.
    at.selectbox(key="outpaint.format").set_value("web-banner").run()
    at.segmented_control(key="outpaint.placement").set_value("centre").run()
    at.button(key="outpaint.load_recipe").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="outpaint.format").value == "9:16"
    assert at.segmented_control(key="outpaint.placement").value == "top"
    assert at.radio(key="outpaint.fill").value == "blur" and at.slider(key="outpaint.seam").value == 8
    assert at.text_area(key="outpaint.prompt").value == "a bright studio"

    # History says what each job did.
    at.switch_page("pages/history.py").run()
    assert not at.exception, at.exception
    summaries = [c for c in texts(at.caption) if "expanded to 9:16, source top" in c]
    assert len(summaries) == 2, texts(at.caption)


def pro_admin_on_batch(settings):
    with write_session(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        admin.plan = Plan.pro_monthly
        session.add(admin)
        session.commit()
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/batch.py").run()
    assert not at.exception, at.exception
    return at


def test_a_batch_zip_with_masks_lists_what_it_skips_and_inpaints_the_rest(studio, studio_settings):
    at = pro_admin_on_batch(studio_settings)
    archive = zip_of(
        {
            "a.png": png_bytes(256, 256),
            "a.mask.png": mask_png((256, 256), (20, 20, 90, 90)),
            "b.png": png_bytes(256, 256),
            "c.png": png_bytes(256, 256),
            "c.mask.png": mask_png((256, 256), None),
        }
    )
    at.file_uploader(key="batch.files").set_value([("shoes.zip", archive, "application/zip")]).run()
    assert not at.exception, at.exception
    captions = texts(at.caption)
    assert "1 image(s) ready" in captions
    assert any("**b.png**" in c and "no mask" in c for c in captions), captions
    assert any("**c.png**" in c and "is empty (all black)" in c for c in captions), captions
    assert any("this batch inpaints (1 masks)" in c for c in captions), captions
    at.text_area(key="batch.prompt").input("a blue patch")
    at.slider(key="batch.steps").set_value(2)
    at.run()
    assert any("1 images · costs **1** credits" in c for c in texts(at.caption)), texts(at.caption)
    at.button(key="batch_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    [job] = all_jobs(studio_settings)
    assert job.task == "inpaint" and job.mask_asset_id is not None and job.cost == 1


def test_a_batch_to_a_format_names_an_image_that_already_has_it(studio, studio_settings):
    at = pro_admin_on_batch(studio_settings)
    files = [("wide.png", png_bytes(320, 256), "image/png"), ("square.png", png_bytes(256, 256), "image/png")]
    at.file_uploader(key="batch.files").set_value(files).run()
    at.text_area(key="batch.prompt").input("a bright studio")
    at.toggle(key="batch.expand").set_value(True).run()
    assert not at.exception, at.exception
    # Instagram post (1:1): the square image has nothing to add; the batch is refused, naming it.
    assert any("square.png: The 256×256 source already has this format" in e for e in texts(at.error)), texts(at.error)
    assert at.button(key="batch_button").disabled
    at.selectbox(key="batch.format").set_value("web-banner").run()
    assert not at.error, texts(at.error)
    assert any("2 images · costs **2** credits" in c for c in texts(at.caption)), texts(at.caption)
    at.button(key="batch_button").click().run()
    assert not at.error, texts(at.error)
    assert [job.params["outpaint"]["aspect"] for job in all_jobs(studio_settings)] == ["16:9", "16:9"]
