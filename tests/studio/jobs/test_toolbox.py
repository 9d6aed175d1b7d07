"""The toolbox through the studio: styles, inpainting, ControlNet, upscaling and recipes, from request to
result, on the tiny preview models (nothing on the diffusers path patched)."""

from __future__ import annotations

import io
from dataclasses import replace

import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image, ImageDraw
from sqlmodel import func, select

from pipelines.masks import feathered
from pipelines.params import ControlParams, Guide, Img2ImgParams, InpaintParams, Task
from studio.accounts.users import get_user
from studio.billing.pricing import Quality
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import JobRequest, custom_request, recipe_request, style_request
from studio.catalogue.styles import load_catalogue
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, Job, JobStatus
from studio.errors import Refused
from studio.jobs.submit import quote, submit_job
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

PARAMS = Img2ImgParams(prompt="a red shoe", negative_prompt="blurry", strength=0.5, steps=4, guidance=6.0, seed=11)
CANNY = ControlParams(model="", guide=Guide.canny, conditioning_scale=0.8, low_threshold=50, high_threshold=150)


@pytest.fixture
def env(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        user = get_user(session=session, username="admin")
    return {
        "settings": studio_settings,
        "catalogue": load_catalogue(studio_settings.catalogue_path),
        "store": AssetStore(studio_settings.assets_dir),
        "user": user,
        "worker": Worker(studio_settings, name="toolbox-worker"),
    }


def submit(env, request: JobRequest, *, upload=None, mask=None, **inputs) -> Job:
    """Submit `request` on a 256×320 upload (or `upload`); `inputs`: submit_job's other inputs."""
    with write_session(env["settings"].database_url) as session:
        return submit_job(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=upload or validate_image_bytes(png_bytes(256, 320)),
            original_name="shoe.png",
            request=request,
            mask=mask,
            **inputs,
        )


def run(env, request: JobRequest, **kwargs) -> tuple[Job, Image.Image]:
    job = submit(env, request, **kwargs)
    assert env["worker"].run_once().id == job.id
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job.id)
        assert job.status is JobStatus.complete, job.error
        result = session.get(Asset, job.result_asset_id)
    return job, Image.open(io.BytesIO(env["store"].read(result.sha256)))


def rows(env) -> tuple[int, int, int]:
    with session_for(env["settings"].database_url) as session:
        return tuple(session.exec(select(func.count()).select_from(t)).one() for t in (Job, Asset, CreditEntry))


def stored_files(env) -> int:
    root = env["store"].root
    return sum(1 for path in root.rglob("*") if path.is_file()) if root.exists() else 0


def box_mask(size=(256, 320), box=(64, 80, 160, 200)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


# Requests: what a style means, and what is refused before anything is stored


def test_a_style_brings_its_template_negative_prompt_model_and_price(env):
    request = style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id="photorealistic", params=PARAMS
    )
    style = env["catalogue"].style("photorealistic")
    assert request.spec.params.prompt == style.prompt_for("a red shoe") != "a red shoe"
    assert (
        request.spec.params.negative_prompt.startswith("blurry, ") and "cartoon" in request.spec.params.negative_prompt
    )
    assert request.model == "preview"  # preview mode: every sd model runs as the tiny one
    assert (request.user_prompt, request.base_credits, request.style) == ("a red shoe", 3, "photorealistic")
    assert quote(settings=env["settings"], request=request, width=256, height=320).credits == 3

    job = submit(env, request)
    assert (job.style, job.cost, job.task) == ("photorealistic", 3, "img2img")
    assert job.params["user_prompt"] == "a red shoe" and job.params["prompt"] == request.spec.params.prompt


def test_a_model_missing_on_this_machine_is_refused_with_how_to_get_it(env, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    real = replace(env["settings"], model="stable-diffusion-v1-5/stable-diffusion-v1-5")
    with pytest.raises(Refused) as refused:
        style_request(settings=real, catalogue=env["catalogue"], style_id="anime", params=PARAMS)
    assert "'counterfeit'" in str(refused.value) and "hf download gsdf/Counterfeit-V2.5" in str(refused.value)


@pytest.mark.parametrize(
    ("style_id", "kwargs", "message"),
    [
        ("abstract", {"quality": Quality.ultra}, "Abstract is offered in Standard quality, not Ultra"),
        (
            "abstract",
            {"control": CANNY},
            r"no Edges \(canny\) ControlNet made for .*\(sd21\).* Abstract runs",
        ),
        ("upscale-2x", {"inpaint": InpaintParams()}, "choose an image-to-image style to inpaint"),
        ("retired-style", {}, "There is no style 'retired-style'"),
    ],
)
def test_requests_a_style_cannot_serve_are_refused(env, style_id, kwargs, message):
    with pytest.raises(Refused, match=message):
        style_request(settings=env["settings"], catalogue=env["catalogue"], style_id=style_id, params=PARAMS, **kwargs)


def test_refused_submits_store_nothing_and_charge_nothing(env):
    before = rows(env), stored_files(env)
    inpaint = custom_request(settings=env["settings"], params=PARAMS, task=Task.inpaint, inpaint=InpaintParams())
    img2img = custom_request(settings=env["settings"], params=PARAMS)
    upscale4 = style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id="upscale-4x", params=replace(PARAMS, prompt="")
    )
    cases = [
        (inpaint, {}, "Inpainting needs a mask"),
        (inpaint, {"mask": Image.new("L", (256, 320), 0)}, "The mask is empty"),
        (inpaint, {"mask": box_mask(size=(128, 160))}, "the source's size \\(256×320\\)"),
        (img2img, {"mask": box_mask()}, "only inpainting takes one"),
        (upscale4, {"upload": validate_image_bytes(png_bytes(1100, 400))}, "up to 1024 px on the long side"),
    ]
    for request, kwargs, message in cases:
        with pytest.raises(Refused, match=message):
            submit(env, request, **kwargs)
    assert (rows(env), stored_files(env)) == before


def test_an_upscale_is_priced_by_its_output_size(env):
    request = style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id="upscale-2x", params=replace(PARAMS, prompt="")
    )
    assert quote(settings=env["settings"], request=request, width=512, height=512).credits == 3  # → 1024 px
    # → 1200 px: over 1024, so the high-resolution surcharge applies: ceil(3 × 1.5) = 5
    assert quote(settings=env["settings"], request=request, width=600, height=512).credits == 5


@pytest.mark.parametrize("names_its_model", [True, False], ids=["recipe-v3", "older-recipe"])
def test_a_recipe_is_priced_by_the_model_that_runs_not_by_the_style_it_names(env, names_its_model):
    """The 1-credit style "abstract" on a recipe that runs the 4× upscaler costs what the upscaler costs (5)."""
    recipe = {
        "task": "upscale_4x",
        "prompt": "",
        "steps": 2,
        "seed": 1,
        "style": "abstract",
        "model": "preview-upscaler-x4",
        "quality": "standard",
    } | ({"catalogue_model": "x4-upscaler"} if names_its_model else {})
    request = recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=recipe)
    assert (request.base_credits, request.catalogue_model) == (5, "x4-upscaler")
    assert request.style is None  # "abstract" runs sd-turbo: this job is not that style's
    assert quote(settings=env["settings"], request=request, width=256, height=256).credits == 5
    job, _ = run(env, request, upload=validate_image_bytes(png_bytes(256, 256)))
    assert job.cost == 5 and job.recipe["catalogue_model"] == "x4-upscaler"


def test_a_recipe_whose_model_cannot_run_its_task_or_lies_about_its_model_is_refused(env):
    base = {"task": "img2img", "prompt": "x", "steps": 4, "strength": 0.5, "seed": 1, "quality": "standard"}
    cases = [
        (base | {"model": "preview-upscaler-x4"}, "cannot do"),  # an upscaler asked to run img2img
        (base | {"model": "preview", "catalogue_model": "x4-upscaler"}, "names 'preview' as what was loaded"),
        (base | {"model": "preview", "catalogue_model": "no-such-model"}, "does not offer"),
        (base | {"model": "preview", "catalogue_model": 7}, "does not offer"),
        (base | {"model": 42}, "names no model"),
    ]
    before = rows(env), stored_files(env)
    for recipe, message in cases:
        with pytest.raises(Refused, match=message):
            recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=recipe)
    assert (rows(env), stored_files(env)) == before


def test_a_recipe_naming_a_model_this_studio_does_not_offer_is_refused(env):
    recipe = {"task": "img2img", "prompt": "x", "steps": 4, "strength": 0.5, "seed": 1, "model": "/etc"}
    with pytest.raises(Refused, match="'/etc', which this studio does not offer"):
        recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=recipe)
    foreign_controlnet = recipe | {"model": "preview", "control": {"model": "someone/evil", "guide": "canny"}}
    with pytest.raises(Refused, match="ControlNet 'someone/evil' is not one this studio offers"):
        recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=foreign_controlnet)
    with pytest.raises(Refused, match="cannot be re-run"):
        recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=recipe | {"task": "dance"})


# Jobs: each task through the queue and a worker


def test_an_inpaint_job_keeps_every_pixel_outside_the_mask(env):
    options = InpaintParams(mask_blur=4, keep_unmasked=True)
    request = style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id="artistic", params=PARAMS, inpaint=options
    )
    upload = validate_image_bytes(png_bytes(256, 320))
    mask = box_mask()
    job, result = run(env, request, upload=upload, mask=mask)

    assert job.task == "inpaint" and job.mask_asset_id is not None
    assert result.size == (256, 320)
    source, result = np.asarray(upload.image), np.asarray(result.convert("RGB"))
    outside = np.asarray(feathered(mask, options.mask_blur)) == 0
    assert np.array_equal(result[outside], source[outside])
    assert not np.array_equal(result[~outside], source[~outside])
    recipe = job.recipe
    assert recipe["inpaint"] == {"mask_blur": 4, "only_masked": False, "padding": 32, "keep_unmasked": True}
    with session_for(env["settings"].database_url) as session:
        stored_mask = session.get(Asset, job.mask_asset_id)
    assert stored_mask.kind is AssetKind.mask and recipe["mask_sha256"] == stored_mask.sha256


def test_a_controlnet_job_records_its_guide_and_re_runs_to_the_same_pixels(env):
    request = style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id="cartoon", params=PARAMS, control=CANNY
    )
    assert request.spec.control.model == "preview-controlnet"
    job, first = run(env, request)
    png = env["store"].read(_result_sha(env, job))
    recipe = read_recipe(png)
    assert recipe == job.recipe
    assert recipe["control"] == {
        "model": "preview-controlnet",
        "guide": "canny",
        "conditioning_scale": 0.8,
        "low_threshold": 50,
        "high_threshold": 150,
    }
    for key in ("model", "task", "prompt", "negative_prompt", "strength", "steps", "guidance", "seed", "scheduler"):
        assert key in recipe
    assert recipe["style"] == "cartoon" and recipe["user_prompt"] == "a red shoe"
    assert set(recipe["versions"]) == {"torch", "diffusers", "transformers"}

    # Load the recipe from the PNG and run it again on the same source: identical pixels.
    again = recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=recipe)
    assert again.spec == request.spec and again.model == request.model and again.style == "cartoon"
    rerun, second = run(env, again)
    assert rerun.id != job.id
    assert np.array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.parametrize(("style_id", "factor"), [("upscale-2x", 2), ("upscale-4x", 4)])
def test_an_upscale_job_returns_exactly_factor_times_the_source(env, style_id, factor):
    request = style_request(
        settings=env["settings"],
        catalogue=env["catalogue"],
        style_id=style_id,
        params=replace(PARAMS, prompt="", steps=2),
    )
    job, result = run(env, request, upload=validate_image_bytes(png_bytes(256, 320)))
    assert result.size == (256 * factor, 320 * factor)
    assert job.recipe["task"] == f"upscale_{factor}x" and job.recipe["denoising_steps"] == 2


def _result_sha(env, job: Job) -> str:
    with session_for(env["settings"].database_url) as session:
        return session.get(Asset, job.result_asset_id).sha256
