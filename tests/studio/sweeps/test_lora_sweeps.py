"""Sweeps with LoRAs through the queue, a worker and History: a sweep whose cells share LoRAs runs in one pass with
them applied; a LoRA-weight axis runs one pass per weight; every cell equals its single run (within the sweep
tolerance of 1/255), records its own weight, and its recipe re-runs. On the tiny preview model and its tiny LoRA."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.loras import file_sha256
from pipelines.params import LIMITS, Img2ImgParams
from studio.accounts.users import get_user
from studio.billing.credits import Account, add_credits, balance
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import JobRequest, custom_request, recipe_request
from studio.catalogue.styles import load_catalogue
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, CreditKind, Job, JobStatus, utcnow
from studio.errors import Refused
from studio.jobs.queries import list_user_jobs
from studio.jobs.submit import quote, submit_job, submit_sweep
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from studio.sweeps.export import cell_label
from studio.sweeps.plan import SecondAxis, SweepPlan, sweep_cells, sweep_cost
from studio.sweeps.results import get_user_sweep
from tests.support import png_bytes

PARAMS = Img2ImgParams(prompt="a red shoe", steps=4, guidance=6.0, seed=9)
LORA = "lcm-sd15"  # data/styles.toml's SD 1.5 LoRA: the tiny preview LoRA in preview mode
TOLERANCE = 1  # a cell of a one-pass sweep is within 1/255 of its single run (tests/pipelines/test_sweep.py)


@pytest.fixture
def env(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        user = get_user(session=session, username="admin")
        account = Account(user_id=user.id)
        add_credits(session=session, account=account, amount=50, kind=CreditKind.grant, now=utcnow(), reason="t")
        session.commit()
    return {
        "settings": studio_settings,
        "catalogue": load_catalogue(studio_settings.catalogue_path),
        "store": AssetStore(studio_settings.assets_dir),
        "user": user,
        "worker": Worker(studio_settings, name="lora-sweep-worker"),
        "upload": validate_image_bytes(png_bytes(256, 320)),
    }


def request(env, *loras: tuple[str, float]) -> JobRequest:
    return custom_request(settings=env["settings"], params=PARAMS, catalogue=env["catalogue"], loras=loras)


def submitted(env, function, **kwargs):
    with write_session(env["settings"].database_url) as session:
        return function(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=env["upload"],
            original_name="shoe.png",
            **kwargs,
        )


def pixels(env, job: Job) -> np.ndarray:
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job.id)
        assert job.status is JobStatus.complete, job.error
        sha256 = session.get(Asset, job.result_asset_id).sha256
    return np.asarray(Image.open(io.BytesIO(env["store"].read(sha256))).convert("RGB"), dtype=np.int16)


def single(env, cell: JobRequest) -> np.ndarray:
    """The cell's request run on its own."""
    job = submitted(env, submit_job, request=cell)
    assert env["worker"].run_once().id == job.id
    return pixels(env, job)


def credits(env) -> int:
    with session_for(env["settings"].database_url) as session:
        return balance(session=session, account=Account(user_id=env["user"].id), now=utcnow())


def run_sweep(env, cells: list[JobRequest]):
    jobs = submitted(env, submit_sweep, requests=cells)
    assert env["worker"].run_once() is not None  # one claim takes every cell
    with session_for(env["settings"].database_url) as session:
        return get_user_sweep(session=session, user_id=env["user"].id, sweep_id=jobs[0].sweep_id)


def test_a_sweep_with_a_lora_runs_in_one_pass_and_each_cell_equals_its_single_run(env):
    preview_lora = env["settings"].models_dir / "preview-lora" / "pytorch_lora_weights.safetensors"
    cells = sweep_cells(request(env, (LORA, 1.5)), SweepPlan(strengths=(0.5, 1.0)))
    sweep = run_sweep(env, cells)
    assert sweep.axis is None
    plain = run_sweep(env, sweep_cells(request(env), SweepPlan(strengths=(0.5, 1.0))))
    for cell, cell_request, without in zip(sweep.cells, cells, plain.cells, strict=True):
        recipe = cell.job.recipe
        assert recipe["sweep"]["mode"] == "one-pass" and "passes" not in recipe["sweep"]
        assert recipe["loras"] == [{"name": LORA, "sha256": file_sha256(preview_lora), "weight": 1.5}]
        swept = pixels(env, cell.job)
        assert np.abs(swept - single(env, cell_request)).max() <= TOLERANCE
        assert np.abs(swept - pixels(env, without.job)).mean() > 1  # the LoRA applied in the pass

        # The cell's recipe (read back from its PNG) re-runs as its single run.
        png = env["store"].read(cell.result.sha256)
        again = recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=read_recipe(png))
        assert again.job_params() == cell_request.job_params()


def test_a_lora_weight_axis_runs_one_pass_per_weight_and_records_each_cells_weight(env):
    weights = (0.0, 1.0, LIMITS["lora_weight"][0])
    plan = SweepPlan(strengths=(0.5, 0.75), axis=SecondAxis.lora_weight, values=weights, lora=LORA)
    cells = sweep_cells(request(env, (LORA, 0.7)), plan)
    assert [(c.spec.params.strength, c.loras[0].weight) for c in cells] == [
        (0.5, 0.0), (0.75, 0.0), (0.5, 1.0), (0.75, 1.0), (0.5, -2.0), (0.75, -2.0),
    ]  # fmt: skip

    # The price is what runs: every cell a run of its own price (LoRAs and shared passes change no price).
    cost = sweep_cost(settings=env["settings"], cells=cells, width=256, height=320)
    one = quote(settings=env["settings"], request=request(env), width=256, height=320).credits
    assert cost == len(cells) * one
    before = credits(env)
    sweep = run_sweep(env, cells)
    assert credits(env) == before - cost

    # Read back as a grid: strengths across, the LoRA's weights down.
    assert (sweep.axis, sweep.rows, sweep.lora, sweep.strengths) == (SecondAxis.lora_weight, weights, LORA, (0.5, 0.75))
    assert cell_label(sweep, sweep.cell(1.0, 0.75)) == f"strength 0.75 · LoRA {LORA} weight 1"
    base = run_sweep(env, sweep_cells(request(env), SweepPlan(strengths=(0.5, 0.75))))
    for cell, cell_request in zip(sweep.cells, cells, strict=True):
        weight = cell_request.loras[0].weight
        assert cell.job.recipe["loras"][0]["weight"] == weight
        assert cell.job.recipe["sweep"] | {"id": None} == {"id": None, "cells": 6, "mode": "one-pass", "passes": 3}
        swept = pixels(env, cell.job)
        assert np.abs(swept - single(env, cell_request)).max() <= TOLERANCE
        without = pixels(env, base.cell(None, cell.strength).job)
        if weight == 0:  # weight 0 gives the base model's pixels
            assert np.abs(swept - without).max() <= TOLERANCE
        else:
            assert np.abs(swept - without).mean() > 1
    with session_for(env["settings"].database_url) as session:
        listed = {job.id for job, _, _ in list_user_jobs(session=session, user_id=env["user"].id, limit=100)}
    assert {cell.job.id for cell in sweep.cells} <= listed  # every cell is in History


@pytest.mark.parametrize(
    ("plan", "loras", "message"),
    [
        (SweepPlan((0.5,), SecondAxis.lora_weight, (2.5,), LORA), ((LORA, 1.0),), "LoRA weights are between -2 and 2"),
        (SweepPlan((0.5,), SecondAxis.lora_weight, (0.5,), LORA), (), "add that LoRA to the run first"),
        (SweepPlan((0.5,), SecondAxis.lora_weight, (0.5,)), ((LORA, 1.0),), "names the LoRA it varies"),
        (SweepPlan((0.5,), SecondAxis.seed, (1,), LORA), ((LORA, 1.0),), "names the LoRA it varies"),
    ],
)
def test_a_lora_weight_axis_that_cannot_run_is_refused(env, plan, loras, message):
    with pytest.raises(Refused, match=message):
        sweep_cells(request(env, *loras), plan)
