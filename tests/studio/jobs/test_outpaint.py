"""Expanding to a format (outpainting) and batches with a mask per image, through submit → queue → worker →
history on the tiny preview model, with every credit checked in the ledger."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from sqlmodel import select

from pipelines.outpaint import plan_outpaint, preset_params
from pipelines.params import CUSTOM, Img2ImgParams, InpaintParams, OutpaintParams, Placement, RunSpec, Task
from studio.accounts.users import get_user
from studio.batches.plan import batch_cost
from studio.batches.uploads import read_uploads
from studio.billing.credits import Account, balance
from studio.billing.plans import allocate_monthly
from studio.billing.pricing import Quality, price
from studio.catalogue.requests import JobRequest, custom_request, recipe_request
from studio.catalogue.styles import load_catalogue
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, CreditKind, Job, JobStatus, Plan, utcnow
from studio.errors import Refused
from studio.jobs.queries import list_user_jobs
from studio.jobs.submit import quote, submit_batch, submit_job, submit_sweep
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import mask_png, png_bytes, zip_of

PARAMS = Img2ImgParams(prompt="a white studio backdrop", strength=1.0, steps=2, guidance=7.5, seed=11)
KEEP = InpaintParams(mask_blur=0, keep_unmasked=True)


@pytest.fixture
def env(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        admin.plan = Plan.pro_monthly  # batches are a Pro feature
        session.add(admin)
        allocate_monthly(session=session, user=admin, now=utcnow())  # this month's credits, before measuring
        session.commit()
        session.refresh(admin)
    return {
        "settings": studio_settings,
        "store": AssetStore(studio_settings.assets_dir),
        "staging": AssetStore(studio_settings.staging_dir),
        "user": admin,
        "worker": Worker(studio_settings, name="outpaint-worker"),
    }


def expand_request(env, expand: OutpaintParams, params: Img2ImgParams = PARAMS) -> JobRequest:
    return custom_request(settings=env["settings"], params=params, task=Task.inpaint, inpaint=KEEP, outpaint=expand)


def submit_single(env, request: JobRequest, source: bytes, settings=None, **kwargs) -> Job:
    with write_session(env["settings"].database_url) as session:
        return submit_job(
            session=session,
            store=env["store"],
            settings=settings or env["settings"],
            user=env["user"],
            upload=validate_image_bytes(source),
            original_name="shoe.png",
            request=request,
            **kwargs,
        )


def submit_batch_of(env, images, requests, masks=None) -> list[Job]:
    with write_session(env["settings"].database_url) as session:
        return submit_batch(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            images=images,
            requests=requests,
            masks=masks,
        )


def finish(env) -> list[Job]:
    while env["worker"].run_once() is not None:
        pass
    with session_for(env["settings"].database_url) as session:
        return list(session.exec(select(Job).order_by(Job.id)).all())


def pixels(env, asset_id: int) -> np.ndarray:
    with session_for(env["settings"].database_url) as session:
        asset = session.get(Asset, asset_id)
    return np.asarray(Image.open(env["store"].path(asset.sha256)).convert("RGB"))


def credits(env) -> int:
    with session_for(env["settings"].database_url) as session:
        return balance(session=session, account=Account(user_id=env["user"].id), now=utcnow())


def ledger(env) -> dict[int, dict[CreditKind, int]]:
    """Every job's credit entries, summed by kind."""
    totals: dict[int, dict[CreditKind, int]] = {}
    with session_for(env["settings"].database_url) as session:
        for row in session.exec(select(CreditEntry).where(CreditEntry.job_id.is_not(None))):
            totals.setdefault(row.job_id, {}).setdefault(row.kind, 0)
            totals[row.job_id][row.kind] += row.amount
    return totals


def counts(env) -> tuple[int, int, int, int]:
    """Jobs, assets, stored files and the user's credits: what a refused submit must leave as it was."""
    root = env["store"].root
    with session_for(env["settings"].database_url) as session:
        return (
            len(session.exec(select(Job)).all()),
            len(session.exec(select(Asset)).all()),
            sum(path.is_file() for path in root.rglob("*")) if root.exists() else 0,
            credits(env),
        )


# One image


def test_an_expanded_photo_keeps_its_pixels_and_is_in_history_with_its_format(env):
    source = png_bytes(256, 320)
    expand = OutpaintParams(aspect="1:1", placement=Placement.right, seam=8)
    before = credits(env)
    job = submit_single(env, expand_request(env, expand), source)
    assert job.mask_asset_id is None and job.params["outpaint"]["placement"] == "right"
    [job] = finish(env)
    assert job.status is JobStatus.complete, job.error

    result, original = pixels(env, job.result_asset_id), np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
    plan = plan_outpaint(256, 320, expand)
    assert result.shape == (320, 320, 3) and plan.box == (64, 0, 320, 320)
    left, top, right, bottom = plan.kept_box  # the source minus the 8 px seam on its left, the side with new area
    assert result[top:bottom, left:right].tobytes() == original[:, left - 64 :].tobytes()
    assert not np.array_equal(result[:, :64], np.zeros_like(result[:, :64]))
    # Recorded: the format and placement in the recipe, the result at its canvas size, charged exactly once.
    assert job.recipe["outpaint"] == {
        "aspect": "1:1",
        "width": 0,
        "height": 0,
        "placement": "right",
        "fill": "blur",
        "seam": 8,
    }
    assert (job.recipe["width"], job.recipe["height"]) == (320, 320) and job.recipe["mask_sha256"] is None
    assert ledger(env) == {job.id: {CreditKind.reserve: -job.cost, CreditKind.commit: 0}}
    assert credits(env) == before - job.cost
    with session_for(env["settings"].database_url) as session:
        [(listed, source_asset, result_asset)] = list_user_jobs(session=session, user_id=env["user"].id)
    assert listed.id == job.id and (result_asset.width, result_asset.height) == (320, 320)
    assert (source_asset.width, source_asset.height) == (256, 320)


def test_its_recipe_re_runs_identically(env):
    source = png_bytes(256, 320)
    first = submit_single(env, expand_request(env, preset_params("web-banner", placement=Placement.left)), source)
    [first] = finish(env)
    catalogue = load_catalogue(env["settings"].catalogue_path)
    again = recipe_request(settings=env["settings"], catalogue=catalogue, recipe=first.recipe)
    assert again.spec == RunSpec.from_dict(first.params) and again.spec.outpaint.aspect == "16:9"
    submit_single(env, again, source)
    first, second = finish(env)
    assert second.status is JobStatus.complete, second.error
    with session_for(env["settings"].database_url) as session:
        shas = [session.get(Asset, job.result_asset_id).sha256 for job in (first, second)]
    assert shas[0] == shas[1]
    assert pixels(env, second.result_asset_id).shape == (320, 569, 3)


@pytest.mark.parametrize(
    ("expand", "message"),
    [
        (OutpaintParams(aspect=CUSTOM, width=1080, height=300), "its height 300 px is less than the source's 320"),
        (OutpaintParams(aspect=CUSTOM, width=256, height=320), "already has this format"),
        (OutpaintParams(aspect=CUSTOM, width=5000, height=5000), "between 8 and 4096 px"),
        (OutpaintParams(aspect="4:5"), "already has this format"),
    ],
)
def test_an_impossible_format_is_refused_and_changes_nothing(env, expand, message):
    before = counts(env)
    with pytest.raises(Refused, match=message):
        submit_single(env, expand_request(env, expand), png_bytes(256, 320))
    assert counts(env) == before


def test_expanding_takes_no_mask(env):
    before = counts(env)
    with pytest.raises(Refused, match="makes its own"):
        submit_single(
            env, expand_request(env, OutpaintParams()), png_bytes(256, 320), mask=Image.new("L", (256, 320), 255)
        )
    assert counts(env) == before


def test_a_sweep_does_not_expand(env):
    before = counts(env)
    request = expand_request(env, OutpaintParams())
    with write_session(env["settings"].database_url) as session, pytest.raises(Refused, match="does not expand"):
        submit_sweep(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=validate_image_bytes(png_bytes(256, 320)),
            original_name="shoe.png",
            requests=[request, request],
        )
    assert counts(env) == before


def test_the_price_is_inpaintings_at_the_output_size(env):
    """A 1000×800 source on SDXL (renders up to 2048 px): inpainted as it is, it is not high resolution; expanded
    to 16:9 its 1423×800 canvas is, and it costs the surcharge."""
    settings = replace(env["settings"], max_output_side=2048)
    spec = RunSpec(task=Task.inpaint, params=PARAMS, inpaint=KEEP)
    inpaint = JobRequest(spec=spec, model="preview-sdxl", quality=Quality.standard, base_credits=2, family="sdxl")
    expand = JobRequest(
        spec=RunSpec(task=Task.inpaint, params=PARAMS, inpaint=KEEP, outpaint=OutpaintParams(aspect="16:9")),
        model="preview-sdxl",
        quality=Quality.standard,
        base_credits=2,
        family="sdxl",
    )
    assert quote(settings=settings, request=inpaint, width=1000, height=800).credits == 2
    expanded = quote(settings=settings, request=expand, width=1000, height=800)
    assert expanded == price(base=2, quality=Quality.standard, width=1423, height=800, max_side=2048)
    assert expanded.credits == 3 and expanded.high_res
    # What the page quotes is what the ledger charges.
    before = credits(env)
    job = submit_single(env, expand, png_bytes(1000, 800), settings=settings)
    assert job.cost == 3 and credits(env) == before - 3
    assert ledger(env) == {job.id: {CreditKind.reserve: -3}}


# A batch to a format


def test_a_batch_expands_every_image_to_the_format(env):
    uploads = read_uploads(
        [("wide.png", png_bytes(320, 256)), ("tall.png", png_bytes(256, 320))], staging=env["staging"], max_pixels=None
    )
    request = expand_request(env, preset_params("story"))
    requests = [request, request]
    cost = batch_cost(settings=env["settings"], images=uploads.images, requests=requests)
    before = credits(env)
    submit_batch_of(env, uploads.images, requests)
    assert credits(env) == before - cost
    jobs = finish(env)
    assert [job.status for job in jobs] == [JobStatus.complete] * 2, [job.error for job in jobs]
    assert [pixels(env, job.result_asset_id).shape[:2] for job in jobs] == [(569, 320), (456, 256)]
    assert credits(env) == before - cost


# A batch with a mask per image


def test_a_batch_zip_with_masks_inpaints_each_image_under_its_own_and_skips_the_rest(env):
    good = png_bytes(256, 288)
    archive = zip_of(
        {
            "shoes/good.png": good,
            "shoes/good.mask.png": mask_png((256, 288), (40, 40, 120, 150)),
            "shoes/missing.png": png_bytes(256, 256),
            "shoes/empty.png": png_bytes(256, 256),
            "shoes/empty.mask.png": mask_png((256, 256), None),
            "shoes/mismatched.png": png_bytes(256, 256),
            "shoes/mismatched.mask.png": mask_png((128, 128), (10, 10, 60, 60)),
            "shoes/orphan.mask.png": mask_png((256, 256), (10, 10, 60, 60)),
        }
    )
    uploads = read_uploads([("shoes.zip", archive)], staging=env["staging"], max_pixels=None)
    assert [image.name for image in uploads.images] == ["good.png"]  # masks are never images to transform
    assert [(mask.width, mask.height) for mask in uploads.masks] == [(256, 288)]
    reasons = dict(uploads.rejected)
    assert set(reasons) == {"missing.png", "empty.png", "mismatched.png", "orphan.mask.png"}
    assert "no mask" in reasons["missing.png"] and "missing.mask.png" in reasons["missing.png"]
    assert "empty.mask.png is empty (all black)" in reasons["empty.png"]
    assert "mismatched.mask.png is 128×128, the image 256×256" in reasons["mismatched.png"]
    assert "a mask with no image" in reasons["orphan.mask.png"]

    request = custom_request(settings=env["settings"], params=PARAMS, task=Task.inpaint, inpaint=KEEP)
    cost = batch_cost(settings=env["settings"], images=uploads.images, requests=[request])
    before = credits(env)
    [job] = submit_batch_of(env, uploads.images, [request], uploads.masks)
    # Only the good image is charged: one job, its price, nothing for the skipped ones.
    assert cost == job.cost == 1 and credits(env) == before - 1
    [job] = finish(env)
    assert job.status is JobStatus.complete, job.error
    assert ledger(env) == {job.id: {CreditKind.reserve: -1, CreditKind.commit: 0}}
    with session_for(env["settings"].database_url) as session:
        mask_asset = session.get(Asset, job.mask_asset_id)
    assert mask_asset.kind is AssetKind.mask and job.recipe["mask_sha256"] == mask_asset.sha256
    result, original = pixels(env, job.result_asset_id), np.asarray(Image.open(io.BytesIO(good)).convert("RGB"))
    inside = np.zeros(original.shape[:2], bool)
    inside[40:151, 40:121] = True
    assert np.array_equal(result[~inside], original[~inside])
    assert not np.array_equal(result[inside], original[inside])


def test_masks_go_only_with_an_inpainting_batch_and_a_refusal_changes_nothing(env):
    archive = zip_of({"a.png": png_bytes(256, 256), "a.mask.png": mask_png((256, 256), (0, 0, 50, 50))})
    uploads = read_uploads([("a.zip", archive)], staging=env["staging"], max_pixels=None)
    inpaint = custom_request(settings=env["settings"], params=PARAMS, task=Task.inpaint, inpaint=KEEP)
    plain = custom_request(settings=env["settings"], params=Img2ImgParams(prompt="x", strength=0.5, steps=2))
    before = counts(env)
    cases = [
        (inpaint, None, "needs a mask per image"),
        (plain, uploads.masks, "carries masks, so it inpaints"),
        (expand_request(env, OutpaintParams()), uploads.masks, "carries masks, so it inpaints"),
        (inpaint, uploads.masks * 2, "one mask per image; got 2 masks for 1 images"),
    ]
    for request, masks, message in cases:
        with pytest.raises(Refused, match=message):
            submit_batch_of(env, uploads.images, [request], masks)
    assert counts(env) == before
