"""IP-Adapter reference images through the studio: a style run with a reference image goes through the queue and a
worker, the image is stored as the user's asset, the recipe names it by hash with its scale and the IP-Adapter by
name and hashes, and re-runs to the same pixels; bad references are refused before anything is stored or charged.
On the tiny preview models and their tiny IP-Adapters (nothing on the diffusers path patched)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from sqlmodel import select

from pipelines.loras import file_sha256
from pipelines.params import LIMITS, Img2ImgParams, InpaintParams, OutpaintParams
from studio.catalogue.recipes import RECIPE_VERSION, read_recipe
from studio.catalogue.references import ReferenceImage
from studio.catalogue.requests import JobRequest, recipe_request, style_request
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, Job, JobStatus, utcnow
from studio.errors import Refused
from studio.jobs.batching import batch_key
from studio.jobs.retention import purge_expired
from studio.jobs.submit import quote, submit_sweep
from studio.jobs.worker import Worker
from studio.media.storage import sha256_hex
from studio.media.validation import validate_image_bytes
from tests.studio.jobs.test_loras import state
from tests.studio.jobs.test_toolbox import _result_sha, box_mask, env
from tests.studio.jobs.test_toolbox import submit as toolbox_submit
from tests.support import png_bytes

__all__ = ["env"]  # the fixture, shared with the toolbox tests
PARAMS = Img2ImgParams(prompt="a red shoe", strength=0.75, steps=4, guidance=6.0, seed=5)
REFERENCE = validate_image_bytes(png_bytes(300, 256, color=(30, 160, 220)))


def reference(scale: float = 0.8, image=REFERENCE) -> ReferenceImage:
    return ReferenceImage(sha256_hex(image.png_bytes), scale)


def request(env, ref: ReferenceImage | None = None, *, style: str = "artistic", **kwargs) -> JobRequest:
    return style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id=style, params=PARAMS, reference=ref, **kwargs
    )


def submit(env, job_request: JobRequest, *, image=None, mask=None, size=(256, 320)) -> Job:
    upload = validate_image_bytes(png_bytes(*size))
    return toolbox_submit(env, job_request, upload=upload, mask=mask, reference_image=image)


def run_png(env, job_request: JobRequest, **inputs) -> tuple[Job, np.ndarray, bytes]:
    """Submit, let the worker run it, and return the job, its result's pixels and its PNG (recipe inside)."""
    job = submit(env, job_request, **inputs)
    assert env["worker"].run_once().id == job.id
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job.id)
        assert job.status is JobStatus.complete, job.error
    png = env["store"].read(_result_sha(env, job))
    return job, np.asarray(validate_image_bytes(png).image.convert("RGB"), dtype=np.int16), png


def test_a_reference_run_stores_the_image_records_it_and_re_runs_identically(env):
    _, base, _ = run_png(env, request(env))
    job, with_reference, png = run_png(env, request(env, reference()), image=REFERENCE)
    adapter = env["settings"].models_dir / "preview-ip-adapter"
    assert job.recipe["reference"] == {
        "sha256": sha256_hex(REFERENCE.png_bytes),
        "scale": 0.8,
        "ip_adapter": "ip-adapter-sd15",
        "ip_adapter_sha256": file_sha256(adapter / "ip-adapter.safetensors"),
        "image_encoder_sha256": file_sha256(adapter / "image_encoder" / "model.safetensors"),
    }
    assert job.recipe["recipe_version"] == RECIPE_VERSION and read_recipe(png) == job.recipe
    assert np.abs(with_reference - base).mean() > 1
    with session_for(env["settings"].database_url) as session:
        stored = session.exec(select(Asset).where(Asset.sha256 == sha256_hex(REFERENCE.png_bytes))).one()
    assert (stored.user_id, stored.original_name) == (env["user"].id, "reference image")

    # The next job without a reference gets the base model's pixels: nothing leaked through the cached pipeline.
    _, after, _ = run_png(env, request(env))
    assert np.array_equal(after, base)

    # The recipe read back from the PNG re-runs to the same pixels at the same price, from the stored reference.
    again = recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=read_recipe(png))
    assert again.reference == reference() and again.ip_adapter == request(env, reference()).ip_adapter
    rerun, rerun_pixels, _ = run_png(env, again)
    assert np.array_equal(rerun_pixels, with_reference) and rerun.cost == job.cost


def test_scale_zero_gives_the_base_pixels_and_a_reference_does_not_change_the_price(env):
    _, base, _ = run_png(env, request(env))
    job, zero, _ = run_png(env, request(env, reference(0.0)), image=REFERENCE)
    assert np.array_equal(zero, base)
    prices = [
        quote(settings=env["settings"], request=r, width=256, height=320).credits
        for r in (request(env), request(env, reference(LIMITS["ip_adapter_scale"][1])))
    ]
    assert prices[0] == prices[1] == job.cost


def test_an_sdxl_inpaint_job_takes_a_reference(env):
    env["settings"] = replace(env["settings"], max_output_side=256)  # fast; the same code as at 1024
    env["worker"] = Worker(env["settings"], name="xl-worker")
    mask = box_mask(size=(512, 640), box=(128, 160, 320, 400))
    plain, guided = (
        request(env, ref, style="sdxl-product", inpaint=InpaintParams(mask_blur=0)) for ref in (None, reference(1.0))
    )
    _, base, _ = run_png(env, plain, mask=mask, size=(512, 640))
    job, with_reference, _ = run_png(env, guided, image=REFERENCE, mask=mask, size=(512, 640))
    assert job.task == "inpaint" and job.recipe["reference"]["ip_adapter"] == "ip-adapter-sdxl"
    assert not np.array_equal(with_reference, base)


@pytest.mark.parametrize(
    ("style", "scale", "kwargs", "message"),
    [
        ("artistic", LIMITS["ip_adapter_scale"][1] + 0.1, {}, "must be between 0 and 1.5"),
        ("artistic", -0.1, {}, "must be between 0 and 1.5"),
        ("flux-product", 0.5, {}, r"FLUX\.1 models take no reference image"),
        ("abstract", 0.5, {}, r"Stable Diffusion 2\.x models take no reference image"),
        (
            "artistic",
            0.5,
            {"inpaint": InpaintParams(mask_blur=0), "outpaint": OutpaintParams(aspect="16:9")},
            "not expanding to a format",
        ),
    ],
)
def test_a_bad_reference_is_refused_with_a_message_and_nothing_changes(env, style, scale, kwargs, message):
    before = state(env)
    with pytest.raises(Refused, match=message):
        submit(env, request(env, reference(scale), style=style, **kwargs), image=REFERENCE)
    assert state(env) == before


def test_mismatched_or_missing_reference_images_are_refused_and_nothing_changes(env):
    other = validate_image_bytes(png_bytes(256, 256, color=(1, 2, 3)))
    before = state(env)
    cases = [
        (request(env, reference()), other, "not the one this request names"),
        (request(env, reference()), None, "no longer stored here"),  # never uploaded
        (request(env), REFERENCE, "goes with a request that names it"),
    ]
    for job_request, image, message in cases:
        with pytest.raises(Refused, match=message):
            submit(env, job_request, image=image)
    with write_session(env["settings"].database_url) as session, pytest.raises(Refused, match="sweep takes no ref"):
        submit_sweep(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=validate_image_bytes(png_bytes(256, 320)),
            original_name="shoe.png",
            requests=[request(env, reference())],
        )
    with pytest.raises(Refused, match="named by the sha256"):
        request(env, ReferenceImage("not-a-hash", 0.5))
    assert state(env) == before


def test_a_stored_reference_runs_without_uploading_it_again(env):
    """A brand kit's (or a re-run's) reference is already stored: the request names it, and nothing is re-sent."""
    first, pixels, _ = run_png(env, request(env, reference()), image=REFERENCE)
    again, same, _ = run_png(env, request(env, reference()))
    assert np.array_equal(same, pixels) and again.params["reference"] == first.params["reference"]


def test_a_recipe_whose_ip_adapter_changed_is_refused_and_old_recipes_still_re_run(env):
    _, pixels, png = run_png(env, request(env))
    old = read_recipe(png) | {"recipe_version": 6}
    assert "reference" not in old
    _, again, _ = run_png(env, recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=old))
    assert np.array_equal(again, pixels)

    _, _, png = run_png(env, request(env, reference()), image=REFERENCE)
    recipe = read_recipe(png)
    before = state(env)
    for change, message in [
        ({"ip_adapter_sha256": "0" * 64}, "is not the one this studio runs now.*Nothing was charged"),
        ({"scale": "strong"}, "numeric scale"),
        ({"scale": 9.0}, "must be between 0 and 1.5"),
    ]:
        with pytest.raises(Refused, match=message):
            recipe_request(
                settings=env["settings"],
                catalogue=env["catalogue"],
                recipe=recipe | {"reference": recipe["reference"] | change},
            )
    assert state(env) == before


def test_a_job_with_a_reference_runs_alone_and_its_reference_outlives_retention_while_queued(env):
    job = submit(env, request(env, reference()), image=REFERENCE)
    with session_for(env["settings"].database_url) as session:
        source = session.get(Asset, job.source_asset_id)
        key = batch_key(job, source, max_side=1024, models_dir=env["settings"].models_dir)
        plain = job.model_copy(update={"params": {k: v for k, v in job.params.items() if k != "reference"}})
        assert key is None and batch_key(plain, source, max_side=1024, models_dir=env["settings"].models_dir)
    with write_session(env["settings"].database_url) as session:
        purge_expired(session=session, store=env["store"], days=1, now=utcnow() + timedelta(days=30))
    assert env["store"].exists(sha256_hex(REFERENCE.png_bytes))
