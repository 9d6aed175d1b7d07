"""LoRAs on the Transform page (AppTest): the expander offers the catalogue's LoRAs of the style's family with a
weight slider whose range is the studio's limit; a run with one names it in its recipe and on its History card."""

from __future__ import annotations

from sqlmodel import select

from pipelines.params import LIMITS, MAX_LORAS, Task
from studio.catalogue.styles import load_catalogue
from studio.config import PROJECT_ROOT
from studio.db.engine import session_for
from studio.db.tables import Job, JobStatus
from studio.jobs.worker import Worker
from studio.web.form import DEFAULT_LORA_WEIGHT, LORA_WEIGHT_STEP
from tests.support import ADMIN_PASSWORD, log_in, png_bytes, texts

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")


def transform_with_source():
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(("shoe.png", png_bytes(256, 256), "image/png"))
    return at.run()


def test_each_style_offers_exactly_the_loras_of_its_family_with_the_limits_weight(studio):
    at = transform_with_source()
    low, high = LIMITS["lora_weight"]
    for style in (style for style in CATALOGUE.styles.values() if style.task is Task.img2img):
        at.selectbox(key="transform.style").set_value(style.id).run()
        offered = [entry.name for entry in CATALOGUE.loras_for(style.family)]
        pickers = [picker for picker in at.multiselect if picker.key == "transform.loras"]
        if not offered:
            assert not pickers and any("no LoRAs for" in caption for caption in texts(at.caption)), style.id
            continue
        [picker] = pickers
        assert picker.options == offered and picker.max_selections == MAX_LORAS, style.id
        picker.set_value(offered[:1]).run()
        slider = at.slider(key=f"transform.lora_weight.{offered[0]}")
        assert (slider.min, slider.max, slider.value, slider.step) == (low, high, DEFAULT_LORA_WEIGHT, LORA_WEIGHT_STEP)
        at.multiselect(key="transform.loras").set_value([]).run()
    assert not at.exception, at.exception


def test_pick_a_lora_run_and_history_names_it(studio, studio_settings):
    at = transform_with_source()
    at.selectbox(key="transform.style").set_value("artistic").run()
    at.text_area(key="transform.prompt").input("a watercolor sneaker")
    at.slider(key="transform.steps").set_value(4)
    at.multiselect(key="transform.loras").set_value(["lcm-sd15"]).run()
    at.slider(key="transform.lora_weight.lcm-sd15").set_value(LIMITS["lora_weight"][0]).run()
    at.button(key="transform_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    Worker(studio_settings, name="test-worker").run_once()
    with session_for(studio_settings.database_url) as session:
        [job] = session.exec(select(Job)).all()
    assert job.status is JobStatus.complete, job.error
    [lora] = job.recipe["loras"]
    assert (lora["name"], lora["weight"], len(lora["sha256"])) == ("lcm-sd15", LIMITS["lora_weight"][0], 64)

    at.switch_page("pages/history.py").run()
    assert any("LoRA lcm-sd15 × -2" in caption for caption in texts(at.caption)), texts(at.caption)

    # Remix: the Transform form comes back with the LoRA and its weight.
    at.button(key=f"remix-{job.id}").click().run()
    at.switch_page("pages/transform.py").run()
    assert at.multiselect(key="transform.loras").value == ["lcm-sd15"]
    assert at.slider(key="transform.lora_weight.lcm-sd15").value == LIMITS["lora_weight"][0]
