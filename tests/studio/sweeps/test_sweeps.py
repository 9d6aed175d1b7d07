"""Sweeps through the studio: cells, charging, one worker pass, per-cell outcomes, grid, ZIP, scores; and the
Compare page's image functions."""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sqlmodel import func, select

from pipelines.params import ControlParams, Img2ImgParams, InpaintParams, Task
from studio.accounts.users import get_user
from studio.billing.credits import Account, balance
from studio.catalogue.requests import custom_request, style_request
from studio.catalogue.styles import load_catalogue
from studio.db.engine import session_for, write_session
from studio.db.tables import CreditEntry, Job, JobStatus, utcnow
from studio.errors import Refused
from studio.jobs.leases import cancel_job
from studio.jobs.submit import submit_sweep
from studio.jobs.worker import Worker
from studio.media.compare import difference, recipe_differences, split_view, zoom_box, zoomed
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from studio.sweeps.export import grid_image, sweep_zip
from studio.sweeps.plan import SecondAxis, SweepPlan, parse_values, strength_range, sweep_cells
from studio.sweeps.results import get_user_sweep
from studio.sweeps.scores import structure_score
from tests.support import gradient, png_bytes

PARAMS = Img2ImgParams(prompt="a red shoe", negative_prompt="blurry", steps=4, guidance=6.0, seed=9)


@pytest.fixture
def env(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        user = get_user(session=session, username="admin")
    return {
        "settings": studio_settings,
        "store": AssetStore(studio_settings.assets_dir),
        "user": user,
        "worker": Worker(studio_settings, name="sweep-worker", heartbeat_seconds=0.02),
        "upload": validate_image_bytes(png_bytes(256, 320)),
    }


def submit(env, cells):
    with write_session(env["settings"].database_url) as session:
        return submit_sweep(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=env["upload"],
            original_name="shoe.png",
            requests=cells,
        )


def sweep_of(env, jobs):
    with session_for(env["settings"].database_url) as session:
        return get_user_sweep(session=session, user_id=env["user"].id, sweep_id=jobs[0].sweep_id)


def credits(env) -> int:
    with session_for(env["settings"].database_url) as session:
        return balance(session=session, account=Account(user_id=env["user"].id), now=utcnow())


# Building cells


def test_strength_ranges_and_lists():
    assert strength_range(0.2, 0.8, 0.15) == (0.2, 0.35, 0.5, 0.65, 0.8)
    assert strength_range(0.3, 0.3, 0.1) == (0.3,)
    assert parse_values("0.5, 0.2;0.5 ,0.9", what="Strengths") == (0.5, 0.2, 0.9)
    with pytest.raises(Refused, match="more than a sweep's 12 cells"):
        strength_range(0.05, 1.0, 0.05)
    with pytest.raises(Refused, match="'x' is not a number"):
        parse_values("0.2, x", what="Strengths")
    with pytest.raises(Refused, match="step must be more than 0"):
        strength_range(0.2, 0.8, 0)


def test_cells_go_row_by_row_with_the_second_axis(env):
    request = custom_request(settings=env["settings"], params=PARAMS)
    plan = SweepPlan(strengths=(0.3, 0.6, 0.9), axis=SecondAxis.guidance, values=(2.0, 8.0))
    cells = sweep_cells(request, plan)
    assert [(c.spec.params.strength, c.spec.params.guidance) for c in cells] == [
        (0.3, 2.0), (0.6, 2.0), (0.9, 2.0), (0.3, 8.0), (0.6, 8.0), (0.9, 8.0),
    ]  # fmt: skip
    assert {c.spec.params.seed for c in cells} == {9}
    seeds = sweep_cells(request, SweepPlan(strengths=(0.5,), axis=SecondAxis.seed, values=(1, 2, 3)))
    assert [c.spec.params.seed for c in seeds] == [1, 2, 3]


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (SweepPlan(strengths=(0.1, 0.2, 0.3, 0.4), axis=SecondAxis.seed, values=(1, 2, 3, 4)), "16 cells"),
        (SweepPlan(strengths=(0.5,), axis=SecondAxis.seed, values=(1.5,)), "Seeds are whole numbers"),
        (SweepPlan(strengths=(0.5,), axis=SecondAxis.guidance, values=(31,)), "Guidance is between 0 and 30"),
        (SweepPlan(strengths=(0.0,)), "Strengths are between 0 and 1"),
    ],
)
def test_plans_that_cannot_run_are_refused(env, plan, message):
    with pytest.raises(Refused, match=message):
        sweep_cells(custom_request(settings=env["settings"], params=PARAMS), plan)


def test_controlnet_and_upscale_requests_are_not_swept(env):
    catalogue = load_catalogue(env["settings"].catalogue_path)
    plan = SweepPlan(strengths=(0.3, 0.6))
    guided = style_request(
        settings=env["settings"], catalogue=catalogue, style_id="cartoon", params=PARAMS, control=ControlParams("")
    )
    upscale = style_request(settings=env["settings"], catalogue=catalogue, style_id="upscale-2x", params=PARAMS)
    for request in (guided, upscale):
        with pytest.raises(Refused, match="Sweeps run image-to-image and inpainting without structure guidance"):
            sweep_cells(request, plan)


# Through the queue and a worker


def test_a_sweep_is_charged_per_cell_and_runs_in_one_pass(env):
    before = credits(env)
    cells = sweep_cells(custom_request(settings=env["settings"], params=PARAMS), SweepPlan(strengths=(0.25, 0.5, 1.0)))
    jobs = submit(env, cells)
    assert len({job.sweep_id for job in jobs}) == 1 and jobs[0].sweep_id is not None
    assert credits(env) == before - 3  # 1 credit per preview cell

    assert env["worker"].run_once() is not None  # one claim takes every cell
    sweep = sweep_of(env, jobs)
    assert sweep.finished and [c.job.status for c in sweep.cells] == [JobStatus.complete] * 3
    for cell in sweep.cells:
        assert cell.job.recipe["sweep"] == {"id": jobs[0].sweep_id, "cells": 3, "mode": "one-pass"}
        assert cell.job.recipe["denoising_steps"] == int(4 * cell.strength)
        assert cell.job.progress_step == cell.job.progress_total == int(4 * cell.strength)
    assert env["worker"].run_once() is None
    assert credits(env) == before - 3

    # Downloads: the grid and the ZIP with every cell and a manifest row per cell.
    grid = grid_image(sweep, env["store"], side=64)
    assert grid.size == (3 * 64, 64 + 22)
    archive = zipfile.ZipFile(io.BytesIO(sweep_zip(sweep, env["store"])))
    names = archive.namelist()
    assert "grid.png" in names and "manifest.csv" in names and sum(n.startswith("cell-") for n in names) == 3
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [float(row["strength"]) for row in manifest] == [0.25, 0.5, 1.0]
    assert all(row["status"] == "complete" and row["credits"] == "1" for row in manifest)
    assert all(
        archive.read(row["file"]) == env["store"].read(c.result.sha256)
        for row, c in zip(manifest, sweep.cells, strict=True)
    )


def test_an_inpainting_sweep_keeps_the_unmasked_pixels_of_every_cell(env):
    mask = Image.new("L", (256, 320), 0)
    mask.paste(255, (64, 64, 192, 200))
    options = InpaintParams(mask_blur=0)
    request = custom_request(settings=env["settings"], params=PARAMS, task=Task.inpaint, inpaint=options)
    cells = sweep_cells(request, SweepPlan(strengths=(0.5, 1.0)))
    with write_session(env["settings"].database_url) as session:
        jobs = submit_sweep(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=env["upload"],
            original_name="shoe.png",
            requests=cells,
            mask=mask,
        )
    assert len({job.mask_asset_id for job in jobs}) == 1 and jobs[0].mask_asset_id is not None
    env["worker"].run_once()
    sweep = sweep_of(env, jobs)
    source = np.asarray(env["upload"].image)
    outside = np.asarray(mask) == 0
    for cell in sweep.cells:
        assert cell.job.status is JobStatus.complete, cell.job.error
        assert cell.job.recipe["task"] == "inpaint" and cell.job.recipe["mask_sha256"] is not None
        assert cell.job.recipe["sweep"]["mode"] == "one-pass"
        result = np.asarray(Image.open(env["store"].path(cell.result.sha256)).convert("RGB"))
        assert np.array_equal(result[outside], source[outside])
        assert not np.array_equal(result[~outside], source[~outside])


def test_a_cell_cancelled_while_queued_is_refunded_alone(env):
    before = credits(env)
    jobs = submit(env, sweep_cells(custom_request(settings=env["settings"], params=PARAMS), SweepPlan((0.5, 1.0))))
    with write_session(env["settings"].database_url) as session:
        cancel_job(session=session, job_id=jobs[0].id, user_id=env["user"].id)
    env["worker"].run_once()
    sweep = sweep_of(env, jobs)
    assert [c.job.status for c in sweep.cells] == [JobStatus.cancelled, JobStatus.complete]
    assert credits(env) == before - 1


def test_a_failed_pass_refunds_every_cell_once(env, monkeypatch):
    import studio.jobs.worker

    def broken(*args, **kwargs):
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(studio.jobs.worker, "render_sweep", broken)
    before = credits(env)
    jobs = submit(env, sweep_cells(custom_request(settings=env["settings"], params=PARAMS), SweepPlan((0.5, 1.0))))
    env["worker"].run_once()
    sweep = sweep_of(env, jobs)
    assert all(c.job.status is JobStatus.failed and "the GPU fell off" in c.job.error for c in sweep.cells)
    assert credits(env) == before
    with session_for(env["settings"].database_url) as session:
        refunds = session.exec(select(func.count()).select_from(CreditEntry).where(CreditEntry.kind == "refund")).one()
    assert refunds == 2


def test_a_sweep_the_user_cannot_afford_stores_and_charges_nothing(env):
    cells = sweep_cells(
        custom_request(settings=env["settings"], params=PARAMS),
        SweepPlan(strengths=(0.3, 0.4, 0.6, 0.8), axis=SecondAxis.seed, values=(1, 2, 3)),
    )
    before = credits(env)
    with pytest.raises(Refused, match="these 12 cells cost 12 together, you can spend 10"):
        submit(env, cells)
    assert credits(env) == before
    with session_for(env["settings"].database_url) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 0


# Scores and comparison


def test_structure_score_is_one_for_the_source_and_lower_for_noise():
    source = gradient(128, 96)
    source.paste((0, 0, 0), (30, 20, 70, 60))
    same = structure_score(source, source)
    assert same.ssim == pytest.approx(1.0) and same.edges == pytest.approx(1.0)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    drifted = structure_score(source, noise)
    touched = structure_score(source, source.filter(ImageFilter.GaussianBlur(1)))
    # A light touch keeps most structure; noise keeps almost none (random edges still meet a few).
    assert 1 > touched.ssim > 0.5 > 0.1 > drifted.ssim
    assert 1 > touched.edges > drifted.edges


def test_compare_views():
    first, second = Image.new("RGB", (100, 50), (255, 0, 0)), Image.new("RGB", (50, 25), (0, 0, 255))
    view = split_view(first, second, 0.3)
    assert view.size == (100, 50) and view.getpixel((10, 25)) == (255, 0, 0) and view.getpixel((80, 25)) == (0, 0, 255)
    assert zoom_box((100, 50), 4, (1.0, 1.0)) == (75, 38, 100, 50)  # clamped to the corner
    assert zoomed(first, 2, (0.5, 0.5)).size == (100, 50)
    diff = difference(first, second)
    assert diff.mean == pytest.approx(170.0) and diff.changed == 1.0
    assert difference(first, first).mean == 0 and difference(first, first).heatmap.getbbox() is None
    assert recipe_differences(
        {"seed": 1, "strength": 0.5, "control": {"guide": "canny"}},
        {"seed": 2, "strength": 0.5, "control": {"guide": "lineart"}, "style": "anime"},
    ) == [("control.guide", "canny", "lineart"), ("seed", 1, 2), ("style", None, "anime")]


def test_replace_keeps_request_fields(env):
    request = custom_request(settings=env["settings"], params=PARAMS)
    [cell] = sweep_cells(request, SweepPlan(strengths=(0.7,)))
    assert cell.spec == replace(request.spec, params=replace(PARAMS, strength=0.7)) and cell.model == request.model
