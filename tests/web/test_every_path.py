"""Every path a user can click, generated from the product: every style of the shipped catalogue on every page
that offers styles, and every value a recipe, preset, remix or sweep cell can carry, at the limits the studio
accepts, loaded into every form. A new style, guide, quality tier or limit is covered without editing this file.

Nothing on the diffusers path is patched: jobs run on the tiny preview models (256 px, a few steps).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields

import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from pipelines.families import DEFAULT_FAMILY, FAMILIES
from pipelines.outpaint import CHANNEL_PRESETS, plan_outpaint
from pipelines.params import (
    ASPECTS,
    CUSTOM,
    LIMITS,
    ControlParams,
    Guide,
    Img2ImgParams,
    InpaintParams,
    Placement,
    RunSpec,
    Task,
)
from studio.accounts.bootstrap import bootstrap
from studio.accounts.users import get_user
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.presets import PresetSettings
from studio.catalogue.recipes import png_with_recipe
from studio.catalogue.styles import Style, load_catalogue
from studio.config import PROJECT_ROOT, get_settings
from studio.db.engine import write_session
from studio.db.tables import Job, JobStatus, Plan, Preset
from studio.web.recipes import LORA_PAGES
from studio.web.styles import OWN_SETTINGS, offered_styles
from tests.support import APP, TIMEOUT, finish_jobs, png_bytes, sign_in_as, texts

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")  # the shipped catalogue
STYLE_PAGES = ("transform", "inpaint", "sweep", "batch")
LOADING_PAGES = ("transform", "inpaint", "sweep")  # the forms a recipe or preset loads into
SIDE = 256


def page_styles(page: str) -> list[str]:
    return [OWN_SETTINGS, *(style.id for style in offered_styles(CATALOGUE, page))]


def mask_png(side: int = SIDE, box=(64, 64, 160, 176)) -> bytes:
    size = (side, side)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def small_studio(studio_settings, monkeypatch):
    """A bootstrapped studio whose results (and only-masked crops) are rendered at SIDE px: fast, and every path
    is the same code as at 1024."""
    monkeypatch.setenv("STUDIO_MAX_OUTPUT_SIDE", str(SIDE))
    get_settings.cache_clear()
    settings = get_settings()
    bootstrap(settings)
    return settings


def signed_in(settings, page: str) -> AppTest:
    """The app as the (Pro) admin, on `page` (signed in through the session, as after a login)."""
    with write_session(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        admin.plan = Plan.pro_monthly  # batches are a Pro feature
        session.add(admin)
        session.commit()
    at = sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()
    if page != "transform":
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def give_source(at: AppTest, page: str, source: bytes) -> None:
    if page == "batch":
        at.file_uploader(key="batch.files").set_value([("a.png", source, "image/png"), ("b.png", source, "image/png")])
    else:
        at.file_uploader(key=f"{page}.source_upload").set_value(("shoe.png", source, "image/png"))
    at.run()
    assert not at.exception, at.exception


def give_mask(at: AppTest, page: str, side: int = SIDE) -> None:
    if page == "sweep":
        at.toggle(key="sweep.inpaint").set_value(True).run()
    at.file_uploader(key=f"{page}.mask_upload").set_value(("mask.png", mask_png(side), "image/png")).run()
    assert not at.exception, at.exception


def submit_button(page: str) -> str:
    return f"{page}_button"


def style_of(style_id: str) -> Style | None:
    return CATALOGUE.styles.get(style_id)


def family_of(style: Style | None) -> str:
    return CATALOGUE.models[style.model].family if style is not None else DEFAULT_FAMILY


def uses_other_family(style: Style | None, guide: Guide) -> bool:
    """Whether the catalogue has no ControlNet for `guide` made for the family of the style's model."""
    return family_of(style) not in CATALOGUE.controlnets.get(guide, {})


def lora_for(page: str, style: Style | None, upscaling: bool) -> str | None:
    """The first catalogue LoRA for the style's family, where the page's form offers LoRAs (not the Batch page's, nor
    for an upscaler); None otherwise."""
    if page not in LORA_PAGES or upscaling:
        return None
    offered = CATALOGUE.loras_for(family_of(style))
    return offered[0].name if offered else None


def source_side(style: Style | None) -> int:
    """A square source the style's model takes: SIDE, or its family's minimum (SDXL: 512 px; it renders at SIDE)."""
    if style is None or style.task.upscale_factor is not None:
        return SIDE
    return max(SIDE, FAMILIES[family_of(style)].min_side)


# Every style on every page that offers it


STYLE_CASES = [
    pytest.param(page, style_id, mode, id=f"{page}-{style_id or 'own'}" + (f"-{mode}" if mode else ""))
    for page in STYLE_PAGES
    for style_id in page_styles(page)
    for mode in (("plain", "inpaint") if page == "sweep" else ("",))
]


@pytest.mark.slow
@pytest.mark.parametrize(("page", "style_id", "mode"), STYLE_CASES)
def test_every_style_runs_from_every_page_that_offers_it(small_studio, page, style_id, mode):
    at = signed_in(small_studio, page)
    assert len(at.selectbox(key=f"{page}.style").options) == len(page_styles(page))
    style = style_of(style_id)
    side = source_side(style)
    give_source(at, page, png_bytes(side, side))
    if page == "inpaint" or mode == "inpaint":
        give_mask(at, page, side)
    at.selectbox(key=f"{page}.style").set_value(style_id).run()
    assert not at.exception, at.exception
    upscaling = style is not None and style.task.upscale_factor is not None

    # The form: prompt, quality, every Advanced setting, and the 4× upscaler's noise level.
    prompt = at.text_input(key=f"{page}.prompt") if upscaling else at.text_area(key=f"{page}.prompt")
    prompt.input("a red sneaker on a table")
    if upscaling or FAMILIES[family_of(style)].negative_prompt:  # FLUX.1's form has no negative prompt
        at.text_input(key=f"{page}.negative").input("blurry")
    qualities = style.qualities if style is not None else tuple(Quality)
    at.segmented_control(key=f"{page}.quality").set_value(qualities[-1].value).run()
    at.slider(key=f"{page}.steps").set_value(2 if upscaling else 4)
    at.slider(key=f"{page}.guidance").set_value(5.0)
    at.number_input(key=f"{page}.seed").set_value(7)
    if not upscaling and page != "sweep":  # a sweep's cells set their own strengths
        at.slider(key=f"{page}.strength").set_value(0.5)
    if style is not None and style.task is Task.upscale_4x:
        at.slider(key=f"{page}.noise_level").set_value(40)
    at.run()
    assert not at.exception, at.exception

    # Mask options, where the form has them.
    if page == "inpaint" or mode == "inpaint":
        at.slider(key=f"{page}.mask_blur").set_value(8)
        at.toggle(key=f"{page}.only_masked").set_value(True)
        at.slider(key=f"{page}.padding").set_value(16)
        at.run()
        assert not at.exception, at.exception

    # Structure guidance, where the form offers it: every guide (and its preview), then one guide kept on.
    if not upscaling and page != "sweep":
        at.toggle(key=f"{page}.use_control").set_value(True).run()
        for guide in Guide:
            at.radio(key=f"{page}.guide").set_value(guide.value).run()
            if guide is Guide.canny:
                at.slider(key=f"{page}.canny").set_value((50, 150)).run()
            if page != "batch":  # the batch form has no single source to preview a guide from
                at.button(key=f"{page}.show_guide").click().run()
                assert any(f"{guide.label} guide" in image.captions for image in at.image), guide
            assert not at.exception, at.exception
        kept = list(Guide)[page_styles(page).index(style_id) % len(Guide)]
        at.radio(key=f"{page}.guide").set_value(kept.value).run()
        if uses_other_family(style, kept):
            # A guide with no ControlNet for the style's family is refused with the reason; nothing can be submitted.
            assert any("ControlNet made for" in e for e in texts(at.error)), texts(at.error)
            assert at.button(key=submit_button(page)).disabled
            at.toggle(key=f"{page}.use_control").set_value(False).run()

    # Presets, where the form has them: save the settings, change one, apply the preset back.
    if page != "sweep" or mode == "plain":
        at.text_input(key=f"{page}.preset_name").input(f"{page} {style_id or 'own'}").run()
        at.button(key=f"{page}.preset_save").click().run()
        assert not at.exception, at.exception
        at.number_input(key=f"{page}.seed").set_value(8).run()
        at.button(key=f"{page}.preset_apply").click().run()
        assert at.number_input(key=f"{page}.seed").value == 7
        assert not at.exception, at.exception

    # LoRAs, where the form offers them and the catalogue has one for the model's family: the first, at a limit
    # (on the Sweep page, a LoRA-weight axis over both limits when the sweep has no inpainting mask).
    lora = lora_for(page, style, upscaling)
    weights = (LIMITS["lora_weight"][page_styles(page).index(style_id) % 2],)
    if lora is not None:
        at.multiselect(key=f"{page}.loras").set_value([lora]).run()
        at.slider(key=f"{page}.lora_weight.{lora}").set_value(weights[0]).run()
        assert not at.exception, at.exception
        if page == "sweep" and mode == "plain":
            weights = LIMITS["lora_weight"]
            at.selectbox(key="sweep.axis").set_value("lora_weight").run()
            at.selectbox(key="sweep.axis_lora").set_value(lora).run()
            at.text_input(key="sweep.axis_values").input(", ".join(str(weight) for weight in weights)).run()
            assert any("denoising pass of its own" in caption for caption in texts(at.caption))

    if page == "sweep":
        at.segmented_control(key="sweep.mode").set_value("List").run()
        at.text_input(key="sweep.strength_list").input("0.5, 1.0").run()

    assert not at.error, texts(at.error)
    assert not at.button(key=submit_button(page)).disabled
    at.button(key=submit_button(page)).click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    jobs = finish_jobs(small_studio)
    assert jobs and all(job.status is JobStatus.complete for job in jobs), [(j.status, j.error) for j in jobs]
    assert {job.style for job in jobs} == {style_id or None}
    if lora is not None:
        recorded = {(item["name"], item["weight"]) for job in jobs for item in job.recipe["loras"]}
        assert recorded == {(lora, weight) for weight in weights}
    at.run()
    assert not at.exception, at.exception


# Every style on the Expand page, the formats (channel presets, aspects, a custom size) and placements in turn

FORMATS = [*CHANNEL_PRESETS, *ASPECTS, CUSTOM]
EXPAND_CASES = [
    pytest.param(style_id, FORMATS[index % len(FORMATS)], list(Placement)[index % len(Placement)], id=style_id or "own")
    for index, style_id in enumerate(page_styles("outpaint"))
]


def test_the_expand_cases_take_every_format_and_placement():
    assert {case.values[1] for case in EXPAND_CASES} == set(FORMATS)
    assert {case.values[2] for case in EXPAND_CASES} == set(Placement)


@pytest.mark.slow
@pytest.mark.parametrize(("style_id", "choice", "placement"), EXPAND_CASES)
def test_every_style_expands_from_the_expand_page(small_studio, style_id, choice, placement):
    at = signed_in(small_studio, "outpaint")
    assert len(at.selectbox(key="outpaint.style").options) == len(page_styles("outpaint"))
    side = source_side(style_of(style_id))
    width, height = side, side + 40  # no format's aspect: every one adds area
    at.file_uploader(key="outpaint.source_upload").set_value(("shoe.png", png_bytes(width, height), "image/png"))
    at.run()
    at.selectbox(key="outpaint.style").set_value(style_id).run()
    at.selectbox(key="outpaint.format").set_value(choice).run()
    if choice == CUSTOM:
        at.number_input(key="outpaint.canvas_width").set_value(width + 64)
        at.number_input(key="outpaint.canvas_height").set_value(height + 16)
    at.segmented_control(key="outpaint.placement").set_value(placement.value)
    at.text_area(key="outpaint.prompt").input("a bright studio")
    at.slider(key="outpaint.steps").set_value(2)
    at.slider(key="outpaint.strength").set_value(1.0)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    at.button(key="outpaint_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    [job] = finish_jobs(small_studio)
    assert job.status is JobStatus.complete, job.error
    expand = RunSpec.from_dict(job.params).outpaint
    assert expand.placement is placement and job.style == (style_id or None)
    assert (job.recipe["width"], job.recipe["height"]) == plan_outpaint(width, height, expand).canvas


# Every value a recipe, preset, remix or sweep cell can carry, at the studio's limits, into every form


@dataclass(frozen=True)
class Extreme:
    """Settings at one corner of the studio's limits, for a style (or own settings) and a quality tier."""

    style: str | None
    quality: Quality
    high: bool  # every value at its maximum, else at its minimum
    guide: Guide

    @property
    def label(self) -> str:
        return f"{self.style or 'own'}-{self.quality.value}-{'max' if self.high else 'min'}-{self.guide.value}"

    def recipe(self, *, inpaint: bool) -> dict:
        """Every setting of LIMITS at this corner, where a recipe carries it (top level, control, inpaint)."""
        style = CATALOGUE.styles[self.style] if self.style is not None else None
        task = Task.inpaint if inpaint else (style.task if style is not None else Task.img2img)
        end = 1 if self.high else 0
        recipe = {
            "style": self.style,
            "quality": self.quality.value,
            "task": task.value,
            "prompt": "a red sneaker",
            "user_prompt": "a red sneaker",
            "steps": QUALITY_TIERS[self.quality].max_steps if self.high else 1,
            **corner(Img2ImgParams, end),
            "noise_level": LIMITS["noise_level"][end],
            "control": None,
            "inpaint": None,
        }
        if task.upscale_factor is None:
            recipe["control"] = {"model": "", "guide": self.guide.value, **corner(ControlParams, end)}
        if inpaint:
            recipe["inpaint"] = {"only_masked": self.high, "keep_unmasked": not self.high, **corner(InpaintParams, end)}
        return recipe


def corner(options: type, end: int) -> dict:
    """The fields of the dataclass `options` that LIMITS bounds, at its low (0) or high (1) end."""
    return {field.name: LIMITS[field.name][end] for field in fields(options) if field.name in LIMITS}


def extremes(page: str) -> list[Extreme]:
    """For every quality tier: both corners, on a style of the page that offers the tier (own settings when
    none does), the guides taken in turn; and both corners of each upscaling style the page offers."""
    cases = []
    for quality in Quality:
        offering = [
            s.id for s in offered_styles(CATALOGUE, page) if quality in s.qualities and not s.task.upscale_factor
        ]
        for high in (False, True):
            style = offering[len(cases) % len(offering)] if offering else None
            cases.append(Extreme(style, quality, high, list(Guide)[len(cases) % len(Guide)]))
    for style in offered_styles(CATALOGUE, page):
        if style.task.upscale_factor is not None:
            cases += [Extreme(style.id, style.qualities[0], high, Guide.canny) for high in (False, True)]
    return cases


EXTREME_CASES = [
    pytest.param(page, case, id=f"{page}-{case.label}") for page in LOADING_PAGES for case in extremes(page)
]


# The form widget (key suffix) that shows each setting of LIMITS: a new limit needs its widget here.
WIDGETS = {
    "strength": "strength",
    "guidance": "guidance",
    "seed": "seed",
    "noise_level": "noise_level",
    "conditioning_scale": "control_scale",
    "low_threshold": "canny",
    "high_threshold": "canny",
    "mask_blur": "mask_blur",
    "padding": "padding",
    "seam": "seam",  # the Expand page's (a recipe's `outpaint` table: not loaded into a form)
    "lora_weight": "lora_weight",  # per LoRA ("transform.lora_weight.<name>"): tests/web/test_lora_page.py
    "ip_adapter_scale": "reference_scale",  # with a reference image (a recipe's `reference` table): test_reference_page
}


def expect_form(at: AppTest, page: str, case: Extreme, recipe: dict) -> None:
    """The form shows every value the recipe carried, wherever the page has a widget for it."""
    assert set(WIDGETS) == set(LIMITS)
    assert at.selectbox(key=f"{page}.style").value == (case.style or OWN_SETTINGS)
    assert at.segmented_control(key=f"{page}.quality").value == case.quality.value
    assert at.slider(key=f"{page}.steps").value == recipe["steps"]
    carried = {**recipe, **(recipe["control"] or {}), **(recipe["inpaint"] or {})}
    shown = {element.key: element.value for element in [*at.slider, *at.number_input]}
    checked = set()
    for name, widget in WIDGETS.items():
        key = f"{page}.{widget}"
        if key not in shown or name not in carried:
            continue  # no such widget on this page or for this task (the strength of an upscale, say)
        value = shown[key]
        if widget == "canny":
            value = value[0] if name == "low_threshold" else value[1]
        assert value == carried[name], (name, value, carried[name])
        checked.add(name)
    assert {"guidance", "seed"} <= checked
    if recipe["control"] is not None and page != "sweep":
        assert at.toggle(key=f"{page}.use_control").value
        assert at.radio(key=f"{page}.guide").value == case.guide.value


@pytest.mark.slow
@pytest.mark.parametrize(("page", "case"), EXTREME_CASES)
def test_a_recipe_at_the_limits_loads_into_the_form_and_runs(small_studio, page, case):
    """Upload a result PNG carrying the recipe, *Load its settings*, and submit it."""
    inpainting = page == "inpaint"
    recipe = case.recipe(inpaint=inpainting)
    style = style_of(case.style)
    model = CATALOGUE.models[style.model] if style is not None else None
    side = source_side(style)
    # What a result of this style names (older recipes name no catalogue model, family or offload).
    ran = {"model": model.preview if model else "preview", "catalogue_model": model.name if model else None}
    result_png = png_with_recipe(Image.open(io.BytesIO(png_bytes(side, side))), recipe | ran)
    at = signed_in(small_studio, page)
    give_source(at, page, result_png)
    at.button(key=f"{page}.load_recipe").click().run()
    assert not at.exception, at.exception
    if page == "transform" and recipe["control"] is not None and uses_other_family(style, case.guide):
        # The settings load; the guide has no ControlNet for the style's family, which the form says at once (the
        # Inpaint form, once it has a mask; _submit_and_expect checks that nothing can be submitted).
        assert any("ControlNet made for" in e for e in texts(at.error)), texts(at.error)
    else:
        assert not at.error, texts(at.error)
    if inpainting:
        give_mask(at, page, side)
    expect_form(at, page, case, recipe)
    if page == "sweep":
        at.segmented_control(key="sweep.mode").set_value("List").run()
        at.text_input(key="sweep.strength_list").input("1.0").run()
    _submit_and_expect(at, small_studio, page, recipe, case)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "case"), EXTREME_CASES)
def test_a_preset_at_the_limits_applies_to_the_form(small_studio, page, case):
    recipe = case.recipe(inpaint=False)
    with write_session(small_studio.database_url) as session:
        admin = get_user(session=session, username="admin")
        control = recipe["control"]
        # Applying checks the preset's pins: the model its style (or own settings) runs here.
        style = CATALOGUE.styles.get(case.style)
        model = CATALOGUE.location(style.model, small_studio) if style is not None else small_studio.model
        preset = PresetSettings(
            style=case.style,
            model=model,
            prompt=recipe["prompt"],
            negative_prompt="",
            strength=recipe["strength"],
            quality=case.quality,
            steps=recipe["steps"],
            guidance=recipe["guidance"],
            seed=recipe["seed"],
            control={k: v for k, v in control.items() if k != "model"} if control else None,
            noise_level=recipe["noise_level"],
        )
        session.add(Preset(owner_id=admin.id, name=case.label, settings=preset.to_dict()))
        session.commit()
    at = signed_in(small_studio, page)
    at.button(key=f"{page}.preset_apply").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    expect_form(at, page, case, recipe)


def _submit_and_expect(at: AppTest, settings, page: str, recipe: dict, case: Extreme) -> None:
    """A run at the limits completes; one that denoises nothing (strength 0) is refused and stores nothing."""
    if page != "sweep" and recipe["control"] is not None and uses_other_family(style_of(case.style), case.guide):
        assert at.button(key=submit_button(page)).disabled  # refused with its reason: checked elsewhere
        return
    at.button(key=submit_button(page)).click().run()
    assert not at.exception, at.exception
    runs_steps = recipe["task"].startswith("upscale") or int(recipe["steps"] * recipe["strength"]) >= 1
    if page == "sweep" or runs_steps:
        assert not at.error, texts(at.error)
        jobs = finish_jobs(settings)
        assert jobs and all(job.status is JobStatus.complete for job in jobs), [(j.status, j.error) for j in jobs]
        at.run()
        assert not at.exception, at.exception
    else:
        assert any("runs no denoising step" in e for e in texts(at.error)), texts(at.error)
        assert finish_jobs(settings) == []


def _sweep_cells_at_the_limits(settings) -> list[Job]:
    """A finished guidance sweep whose cells sit at the limits (guidance 0 and the maximum, strength 1)."""
    at = signed_in(settings, "sweep")
    give_source(at, "sweep", png_bytes(SIDE, SIDE))
    at.text_area(key="sweep.prompt").input("a red sneaker")
    at.slider(key="sweep.steps").set_value(2)
    at.segmented_control(key="sweep.mode").set_value("List").run()
    at.text_input(key="sweep.strength_list").input(f"0.5, {LIMITS['strength'][1]}").run()
    at.selectbox(key="sweep.axis").set_value("guidance").run()
    low, high = LIMITS["guidance"]
    at.text_input(key="sweep.axis_values").input(f"{low}, {high}").run()
    at.button(key="sweep_button").click().run()
    assert not at.error, texts(at.error)
    return finish_jobs(settings)


@pytest.mark.slow
def test_every_sweep_cell_opens_in_transform_and_every_job_remixes(small_studio):
    """*Use this one* on each cell of a sweep at the guidance limits, then *Remix* of each from History."""
    cells = _sweep_cells_at_the_limits(small_studio)
    assert len(cells) == 4 and all(cell.status is JobStatus.complete for cell in cells)
    for cell in cells:
        at = signed_in(small_studio, "sweep")
        at.session_state["sweep.last_sweep_id"] = cell.sweep_id
        at.run()
        at.button(key=f"use-{cell.id}").click().run()
        assert not at.exception, at.exception
        assert at.title[0].value == "Transform"
        assert at.slider(key="transform.guidance").value == cell.params["guidance"]
        assert at.slider(key="transform.strength").value == cell.params["strength"]

        at.switch_page("pages/history.py").run()
        at.button(key=f"remix-{cell.id}").click().run()
        assert not at.exception, at.exception
        assert at.title[0].value == "Transform"
        assert at.slider(key="transform.guidance").value == cell.params["guidance"]
