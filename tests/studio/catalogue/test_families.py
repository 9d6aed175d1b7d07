"""Model families in the catalogue: the `family` field decides what runs (in preview mode: the family's tiny model),
what a ControlNet may steer, the smallest source and what the recipe records. Cases are generated from the shipped
catalogue, so a new model, style or guide is covered without editing this file."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import pytest
from PIL import Image
from sqlmodel import func, select

from pipelines.families import CONTROLNET, FAMILIES
from pipelines.params import ControlParams, Guide, Img2ImgParams
from studio.accounts.users import get_user
from studio.billing.credits import Account, balance
from studio.billing.pricing import HIGH_RES_LONG_SIDE
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import recipe_request, style_request
from studio.catalogue.styles import STUDIO_FAMILIES, CatalogueError, ModelKind, load_catalogue, parse_catalogue
from studio.config import PROJECT_ROOT
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, Job, JobStatus, utcnow
from studio.errors import Refused
from studio.jobs.submit import quote, submit_job, submit_sweep
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
DIFFUSION_STYLES = [style for style in CATALOGUE.styles.values() if style.task.upscale_factor is None]
PARAMS = Img2ImgParams(prompt="a red sneaker", strength=0.5, steps=4, seed=3)

MINIMAL = """
[models.base]
kind = "sd"
location = "stable-diffusion-v1-5/stable-diffusion-v1-5"
credits = 2

[models.xl]
kind = "sd"
location = "stabilityai/stable-diffusion-xl-base-1.0"
family = "sdxl"
credits = 4

[models.edges]
kind = "controlnet"
location = "lllyasviel/control_v11p_sd15_canny"

[models.xl-edges]
kind = "controlnet"
location = "diffusers/controlnet-canny-sdxl-1.0"
family = "sdxl"

[controlnets]
canny = ["edges", "xl-edges"]

[styles.paint]
name = "Paint"
task = "img2img"
model = "xl"
prompt = "{prompt}, oil painting"
"""


def family_of(style) -> str:
    return CATALOGUE.models[style.model].family


# --- the catalogue file ----------------------------------------------------------------------------------------


def test_the_default_catalogue_offers_sdxl_models_a_controlnet_and_styles_for_them():
    sdxl = {entry.name for entry in CATALOGUE.models.values() if entry.family == "sdxl"}
    assert {"sdxl", "realvis-xl", "sdxl-turbo", "controlnet-sdxl-canny"} <= sdxl
    assert {family_of(style) for style in DIFFUSION_STYLES} >= {"sd15", "sd21", "sdxl"}
    assert CATALOGUE.controlnets[Guide.canny]["sdxl"] == "controlnet-sdxl-canny"


@pytest.mark.parametrize("entry", list(CATALOGUE.models.values()), ids=lambda entry: entry.name)
def test_in_preview_mode_every_model_runs_as_the_tiny_model_of_its_family_and_kind(entry, studio_settings):
    location = CATALOGUE.location(entry.name, studio_settings)
    if entry.kind in (ModelKind.sd, ModelKind.controlnet):
        role = CONTROLNET if entry.kind is ModelKind.controlnet else "base"
        assert location == FAMILIES[entry.family].preview(role)
    else:
        assert location == entry.kind.preview


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('family = "sdxl"\ncredits = 4', 'family = "sd3"\ncredits = 4'),
            "model 'xl' names the unknown family 'sd3'",
        ),
        (
            ('family = "sdxl"\ncredits = 4', 'family = "flux-kontext"\ncredits = 4'),
            r"model 'xl' \(FLUX\.1 Kontext\) edits with an instruction only: use task = 'edit'",
        ),
        (('task = "img2img"', 'task = "edit"'), r"model 'xl' \(Stable Diffusion XL\) does not edit"),
        (
            ('family = "sdxl"\ncredits = 4', 'family = "flux"\ncredits = 4'),
            None,  # a FLUX.1 img2img style is fine…
        ),
        (
            ('prompt = "{prompt}, oil painting"', 'prompt = "{prompt}, oil painting"\nnegative_prompt = "blur"'),
            None,  # …and so is a negative prompt on an SDXL one
        ),
        (
            (
                'family = "sdxl"\ncredits = 4\n',
                'family = "flux"\ncredits = 4\n[styles.f]\nname = "F"\ntask = "img2img"'
                '\nmodel = "xl"\nprompt = "{prompt}"\nnegative_prompt = "blur"\n',
            ),
            "FLUX.1 models take no negative prompt",
        ),
        (('family = "sdxl"\n\n[controlnets]', 'family = "flux"\n\n[controlnets]'), "FLUX.1 family has no ControlNet"),
        (('family = "sdxl"\ncredits = 4', 'offload = "gpu"\ncredits = 4'), "model 'xl' asks for offload 'gpu'"),
        (('canny = ["edges", "xl-edges"]', 'canny = ["edges", "edges"]'), "both sd15 ControlNets"),
        (('canny = ["edges", "xl-edges"]', 'canny = ["edges", "xl"]'), "'xl' is not a controlnet"),
        (('canny = ["edges", "xl-edges"]', "canny = [1]"), "1 is not a controlnet"),
    ],
)
def test_a_broken_family_entry_stops_the_catalogue_with_a_message_naming_it(edit, message):
    if message is None:
        parse_catalogue(MINIMAL.replace(*edit))
        return
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(MINIMAL.replace(*edit))
    parse_catalogue(MINIMAL)  # the unedited text is fine


def test_an_unknown_family_lists_the_known_ones_and_an_upscaler_takes_none():
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(MINIMAL.replace('family = "sdxl"\ncredits = 4', 'family = "sd3"\ncredits = 4'))
    assert all(name in str(caught.value) for name in STUDIO_FAMILIES)
    upscaler = '[models.up]\nkind = "upscaler_x2"\nlocation = "a/b"\nfamily = "sdxl"\ncredits = 3\n'
    with pytest.raises(CatalogueError, match="belongs to no model family"):
        parse_catalogue(upscaler + MINIMAL)


def test_offload_is_read_per_model_and_defaults_to_none():
    catalogue = parse_catalogue(
        MINIMAL.replace('family = "sdxl"\ncredits = 4', 'family = "sdxl"\noffload = "model"\ncredits = 4')
    )
    assert catalogue.models["xl"].offload == "model" and catalogue.models["base"].offload == "none"


# --- requests: family, price, ControlNets ----------------------------------------------------------------------


@pytest.mark.parametrize("style", DIFFUSION_STYLES, ids=lambda style: style.id)
def test_a_style_request_carries_its_models_family_offload_and_price(style, studio_settings):
    entry = CATALOGUE.models[style.model]
    request = style_request(settings=studio_settings, catalogue=CATALOGUE, style_id=style.id, params=PARAMS)
    assert (request.family, request.offload, request.base_credits) == (entry.family, entry.offload, entry.credits)
    assert request.job_params()["family"] == entry.family
    assert request.model == FAMILIES[entry.family].preview()


@pytest.mark.parametrize(
    ("style", "guide"),
    [(style, guide) for style in DIFFUSION_STYLES for guide in Guide],
    ids=lambda value: getattr(value, "id", None) or value.value,
)
def test_a_guide_uses_the_controlnet_of_the_styles_family_or_is_refused_by_name(style, guide, studio_settings):
    control = ControlParams(model="", guide=guide)
    made_for = CATALOGUE.controlnets.get(guide, {})
    family = family_of(style)
    if family in made_for:
        request = style_request(
            settings=studio_settings, catalogue=CATALOGUE, style_id=style.id, params=PARAMS, control=control
        )
        assert request.spec.control.model == FAMILIES[family].preview(CONTROLNET)
    else:
        with pytest.raises(Refused, match=f"no {re.escape(guide.label)} ControlNet made for .*{family}") as caught:
            style_request(
                settings=studio_settings, catalogue=CATALOGUE, style_id=style.id, params=PARAMS, control=control
            )
        assert style.name in str(caught.value)


def xl_style():
    return next(style for style in DIFFUSION_STYLES if family_of(style) == "sdxl")


def sd15_style():
    return next(style for style in DIFFUSION_STYLES if family_of(style) == "sd15")


def test_a_recipe_of_another_family_or_with_another_familys_controlnet_is_refused(studio_settings):
    style = xl_style()
    request = style_request(settings=studio_settings, catalogue=CATALOGUE, style_id=style.id, params=PARAMS)
    recipe = request.job_params() | {"model": request.model, "style": style.id, "quality": "standard"}
    assert recipe_request(settings=studio_settings, catalogue=CATALOGUE, recipe=recipe).family == "sdxl"
    with pytest.raises(Refused, match=r"made with a sd15 model, and .* is a sdxl model"):
        recipe_request(settings=studio_settings, catalogue=CATALOGUE, recipe=recipe | {"family": "sd15"})
    sd15_canny = {"model": "preview-controlnet", "guide": "canny", "conditioning_scale": 1.0}
    with pytest.raises(Refused, match="made for sd15 models, and the model it runs is a sdxl model"):
        recipe_request(settings=studio_settings, catalogue=CATALOGUE, recipe=recipe | {"control": sd15_canny})
    # A recipe written before families existed names none and re-runs as before.
    older = sd15_style()
    legacy = {"model": "preview", "style": older.id, "task": "img2img", "prompt": "x", "steps": 4, "strength": 0.5}
    assert recipe_request(settings=studio_settings, catalogue=CATALOGUE, recipe=legacy).family == "sd15"


@pytest.mark.parametrize("style", DIFFUSION_STYLES, ids=lambda style: style.id)
def test_the_high_resolution_surcharge_follows_the_size_the_familys_model_renders(style, studio_settings):
    """With the studio allowing 4096 px, a 4096² source renders at the family's cap: SD 1.x's 1024 px is not high
    resolution, SDXL's and FLUX.1's 2048 px are, an editor's 1 MP budget (1024²) is not; the quote says so."""
    settings = replace(studio_settings, max_output_side=4096)
    request = style_request(settings=settings, catalogue=CATALOGUE, style_id=style.id, params=PARAMS)
    quoted = quote(settings=settings, request=request, width=4096, height=4096)
    assert quoted.high_res is (max(FAMILIES[family_of(style)].output_size(4096, 4096, 4096)) > HIGH_RES_LONG_SIDE)


# --- submitting and running --------------------------------------------------------------------------------------


@pytest.fixture
def env(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        user = get_user(session=session, username="admin")
    return {"settings": studio_settings, "store": AssetStore(studio_settings.assets_dir), "user": user}


def counts(env) -> tuple[int, int, int]:
    """Jobs, assets and the user's balance."""
    with session_for(env["settings"].database_url) as session:
        jobs = session.exec(select(func.count()).select_from(Job)).one()
        assets = session.exec(select(func.count()).select_from(Asset)).one()
        credits = balance(session=session, account=Account(user_id=env["user"].id), now=utcnow())
    return jobs, assets, credits


def submit(env, request, upload, submit=submit_job, **kwargs):
    with write_session(env["settings"].database_url) as session:
        return submit(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=upload,
            original_name="shoe.png",
            **kwargs,
            **({"request": request} if submit is submit_job else {"requests": request}),
        )


def test_a_source_below_the_familys_minimum_is_refused_naming_the_model_and_nothing_is_charged(env):
    style = xl_style()
    request = style_request(settings=env["settings"], catalogue=CATALOGUE, style_id=style.id, params=PARAMS)
    before = counts(env)
    small = FAMILIES["sdxl"].min_side - 8
    with pytest.raises(Refused, match=f"model '{style.model}' .*needs at least {FAMILIES['sdxl'].min_side} px"):
        submit(env, request, validate_image_bytes(png_bytes(small, 768)))
    assert counts(env) == before and not any(env["store"].root.rglob("*.png"))


def test_a_sweep_mixing_models_is_refused_before_any_charge(env):
    requests = [
        style_request(settings=env["settings"], catalogue=CATALOGUE, style_id=style.id, params=PARAMS)
        for style in (xl_style(), sd15_style())
    ]
    before = counts(env)
    with pytest.raises(Refused, match="one model"):
        submit(env, requests, validate_image_bytes(png_bytes(768, 512)), submit=submit_sweep)
    assert counts(env) == before


def test_an_sdxl_style_runs_on_the_tiny_sdxl_and_its_recipe_names_the_family_and_the_catalogue_model(env):
    env["settings"] = replace(env["settings"], max_output_side=256)  # fast; the same code as at 1024
    style = xl_style()
    request = style_request(settings=env["settings"], catalogue=CATALOGUE, style_id=style.id, params=PARAMS)
    job = submit(env, request, validate_image_bytes(png_bytes(768, 512)))
    assert Worker(env["settings"], name="family-worker").run_once().id == job.id
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job.id)
        result = session.get(Asset, job.result_asset_id)
    assert job.status is JobStatus.complete, job.error
    recipe = read_recipe(env["store"].read(result.sha256))
    assert recipe["family"] == "sdxl" and recipe["catalogue_model"] == style.model
    assert recipe["model"] == "preview-sdxl" and recipe["style"] == style.id
    assert recipe["target_size"] == [result.height, result.width]  # SDXL's micro-conditioning, recorded
    with Image.open(io.BytesIO(env["store"].read(result.sha256))) as image:
        assert max(image.size) == 256
    # The recipe re-runs as the same model at the same price.
    again = recipe_request(settings=env["settings"], catalogue=CATALOGUE, recipe=recipe)
    assert (again.catalogue_model, again.family, again.base_credits) == (style.model, "sdxl", request.base_credits)
