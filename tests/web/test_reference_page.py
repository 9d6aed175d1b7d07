"""The Reference image expander on Transform and Inpaint (AppTest): offered for each style whose family has an
IP-Adapter in the catalogue, with a scale slider whose range is the studio's limit; an upload or a library pick
becomes the reference, a bad file is refused with nothing stored; a run with one records it, names it on its History
card, and Remix brings it back."""

from __future__ import annotations

import pytest
from sqlmodel import select

from pipelines.params import IP_ADAPTER_SCALE_STEP, LIMITS, Task
from studio.catalogue.styles import load_catalogue
from studio.config import PROJECT_ROOT
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, Job, JobStatus
from studio.jobs.worker import Worker
from studio.media.storage import sha256_hex
from studio.media.validation import validate_image_bytes
from studio.web.references import DEFAULT_SCALE
from tests.support import ADMIN_PASSWORD, log_in, png_bytes, queue_job, texts

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
REFERENCE_PNG = png_bytes(300, 256, color=(30, 160, 220))


def page_with_source(page: str = "transform"):
    at = log_in("admin", ADMIN_PASSWORD)
    if page != "transform":
        at.switch_page(f"pages/{page}.py").run()
    at.file_uploader(key=f"{page}.source_upload").set_value(("shoe.png", png_bytes(256, 256), "image/png"))
    return at.run()


def counts(settings) -> tuple[int, int]:
    with session_for(settings.database_url) as session:
        return len(session.exec(select(Job)).all()), len(session.exec(select(Asset)).all())


@pytest.mark.parametrize("page", ["transform", "inpaint"])
def test_each_style_offers_a_reference_exactly_when_its_family_has_an_ip_adapter(studio, page):
    at = page_with_source(page)
    at.file_uploader(key=f"{page}.reference_upload").set_value(("ref.png", REFERENCE_PNG, "image/png")).run()
    low, high = LIMITS["ip_adapter_scale"]
    for style in (style for style in CATALOGUE.styles.values() if style.task is Task.img2img):
        at.selectbox(key=f"{page}.style").set_value(style.id).run()
        sliders = [slider for slider in at.slider if slider.key == f"{page}.reference_scale"]
        if CATALOGUE.ip_adapter_for(style.family) is None:
            assert not sliders and any("take no reference image" in c for c in texts(at.caption)), style.id
            continue
        [slider] = sliders
        assert (slider.min, slider.max, slider.step) == (low, high, IP_ADAPTER_SCALE_STEP), style.id
        assert slider.value == DEFAULT_SCALE
    assert not at.exception, at.exception


def test_a_bad_reference_file_is_refused_and_nothing_is_stored(studio, studio_settings):
    at = page_with_source()
    at.selectbox(key="transform.style").set_value("artistic").run()
    before = counts(studio_settings)
    at.file_uploader(key="transform.reference_upload").set_value(("ref.png", b"not an image", "image/png")).run()
    assert at.error and not [slider for slider in at.slider if slider.key == "transform.reference_scale"]
    at.file_uploader(key="transform.reference_upload").set_value(("small.png", png_bytes(64, 64), "image/png")).run()
    assert any("too small" in error for error in texts(at.error)), texts(at.error)
    assert counts(studio_settings) == before and not at.exception


def test_upload_a_reference_run_history_names_it_and_remix_brings_it_back(studio, studio_settings):
    at = page_with_source()
    at.selectbox(key="transform.style").set_value("artistic").run()
    at.text_area(key="transform.prompt").input("a watercolor sneaker")
    at.slider(key="transform.steps").set_value(4)
    at.file_uploader(key="transform.reference_upload").set_value(("ref.png", REFERENCE_PNG, "image/png")).run()
    at.slider(key="transform.reference_scale").set_value(LIMITS["ip_adapter_scale"][1]).run()
    assert any("Presets do not keep a reference image yet" in caption for caption in texts(at.caption))
    at.button(key="transform_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    Worker(studio_settings, name="test-worker").run_once()
    with session_for(studio_settings.database_url) as session:
        [job] = session.exec(select(Job)).all()
    assert job.status is JobStatus.complete, job.error
    sha256 = sha256_hex(validate_image_bytes(REFERENCE_PNG).png_bytes)
    assert (job.recipe["reference"]["sha256"], job.recipe["reference"]["scale"]) == (sha256, 1.5)

    at.switch_page("pages/history.py").run()
    assert any("reference image × 1.5" in caption for caption in texts(at.caption)), texts(at.caption)

    # Remix: the Transform form comes back with the reference image and its scale.
    at.button(key=f"remix-{job.id}").click().run()
    at.switch_page("pages/transform.py").run()
    assert at.slider(key="transform.reference_scale").value == 1.5
    assert sha256_hex(at.session_state["transform.reference_image"].png_bytes) == sha256


def test_pick_a_reference_from_the_library_on_inpaint(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        queue_job(session, studio_settings, original_name="palette.png")  # its source is in the library
    at = page_with_source("inpaint")
    at.selectbox(key="inpaint.style").set_value("artistic").run()
    assert at.selectbox(key="inpaint.reference_pick").options == ["palette.png"]
    at.button(key="inpaint.reference_use").click().run()
    assert at.slider(key="inpaint.reference_scale").value == DEFAULT_SCALE
    assert at.session_state["inpaint.reference_image"].width == 256
    at.button(key="inpaint.reference_remove").click().run()
    assert not [slider for slider in at.slider if slider.key == "inpaint.reference_scale"]
    assert not at.exception, at.exception
