"""LoRAs on instruction edits (FLUX.1 Kontext, Qwen-Image-Edit and its Plus) through the queue, a worker and History,
on the tiny preview editors and the tiny LoRA of each family (pipelines.tiny.save_tiny_lora; nothing on the diffusers
path patched): the LoRA changes the edit, the recipe names it by hash and weight and re-runs identically, the next
edit without it gets the base pixels; an edit's LoRA-weight sweep runs cell by cell, each cell its single run."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.loras import PREVIEW_LORAS, file_sha256
from pipelines.params import Task
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import recipe_request
from studio.errors import Refused
from studio.sweeps.plan import EDIT_SWEEP, SecondAxis, SweepPlan, sweep_cells
from tests.studio.jobs.test_flux_edit import (
    CATALOGUE,
    env,
    finished,
    request_for,
    run_queue,
    source_upload,
    submit,
    sweep,
)

__all__ = ["env"]  # the fixture, shared with the FLUX.1 / edit tests
EDIT_FAMILIES = ("flux-kontext", "qwen-image-edit", "qwen-image-edit-plus")
# The first edit style of each family, and the catalogue's LoRA for it (every family it offers LoRAs for has one).
CASES = [
    pytest.param(
        next(s for s in CATALOGUE.styles.values() if s.family == family and s.task == Task.edit),
        CATALOGUE.loras_for(family)[0].name,
        id=family,
    )
    for family in EDIT_FAMILIES
]


def edit(env, style, *loras) -> tuple[dict, np.ndarray]:
    """Run the edit with `loras`; its recipe and pixels."""
    job = submit(env, request_for(env, style, Task.edit, loras=loras), source_upload())
    run_queue(env)
    job, png = finished(env, job.id)
    return read_recipe(png), np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize(("style", "lora"), CASES)
def test_an_edit_with_a_lora_records_it_and_re_runs_identically(env, style, lora):
    _, base = edit(env, style)
    recipe, with_lora = edit(env, style, (lora, 1.5))
    tiny = env["settings"].models_dir / PREVIEW_LORAS[style.family] / "pytorch_lora_weights.safetensors"
    assert recipe["loras"] == [{"name": lora, "sha256": file_sha256(tiny), "weight": 1.5}]
    assert np.abs(with_lora - base).max() > 0

    # Nothing leaks into the next edit; weight 0 is the base editor.
    assert np.array_equal(edit(env, style)[1], base)
    assert np.array_equal(edit(env, style, (lora, 0.0))[1], base)

    # The recipe re-runs as the same request, to the same pixels.
    again = recipe_request(settings=env["settings"], catalogue=CATALOGUE, recipe=recipe)
    assert again.job_params() == request_for(env, style, Task.edit, loras=((lora, 1.5),)).job_params()
    job = submit(env, again, source_upload())
    run_queue(env)
    _, png = finished(env, job.id)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16), with_lora)


def test_an_edit_sweep_over_a_loras_weight_runs_each_cell_as_its_single_run(env):
    style, lora = CASES[0].values
    cells = sweep_cells(
        request_for(env, style, Task.edit, loras=((lora, 1.0),)),
        SweepPlan(strengths=EDIT_SWEEP, axis=SecondAxis.lora_weight, values=(0.0, 2.0), lora=lora),
    )
    jobs = sweep(env, cells, source_upload())
    run_queue(env)
    for job, cell in zip(jobs, cells, strict=True):
        job, png = finished(env, job.id)
        recipe = read_recipe(png)
        assert recipe["loras"][0]["weight"] == cell.loras[0].weight and recipe["sweep"]["mode"] == "separate"
        single = submit(env, cell, source_upload())
        run_queue(env)
        _, single_png = finished(env, single.id)
        assert np.array_equal(_pixels(single_png), _pixels(png))


def test_a_lora_of_another_family_is_refused_for_an_edit(env):
    style = CASES[1].values[0]  # a Qwen-Image-Edit style
    with pytest.raises(Refused, match="trained for"):
        request_for(env, style, Task.edit, loras=(("turbo-kontext", 1.0),)).check()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
