"""The Transform form starts each style from its model's steps: a distilled model's own few (SD-Turbo, SDXL-Turbo,
FLUX.1 [schnell]), every other style its quality tier's; the quality picker's labels say so (AppTest, generated
from the catalogue)."""

from __future__ import annotations

from pipelines.params import Task
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.styles import load_catalogue, starting_steps
from studio.config import PROJECT_ROOT
from tests.support import ADMIN_PASSWORD, log_in

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")


def test_every_style_starts_from_its_models_steps_and_switching_style_resets_them(studio):
    at = log_in("admin", ADMIN_PASSWORD)
    styles = [style for style in CATALOGUE.styles.values() if style.task is Task.img2img]
    assert any(style.steps for style in styles) and any(not style.steps for style in styles)
    for style in styles:
        at.selectbox(key="transform.style").set_value(style.id).run()
        quality = Quality(at.segmented_control(key="transform.quality").value)
        assert at.slider(key="transform.steps").value == starting_steps(style, quality), style.id
        picker = at.segmented_control(key="transform.quality")
        assert list(picker.options) == [
            f"{QUALITY_TIERS[q].label} · {starting_steps(style, q)} steps" for q in style.qualities
        ], style.id
    assert not at.exception, at.exception
