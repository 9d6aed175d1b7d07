"""LoRAs through the studio: a style run with a catalogue LoRA goes through the queue and a worker, its recipe
names the LoRA by name, hash and weight, and re-runs to the same pixels; bad LoRAs are refused before anything
is stored or charged. On the tiny preview model and its tiny LoRA (nothing on the diffusers path patched)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.loras import file_sha256
from pipelines.params import LIMITS, MAX_LORAS, Img2ImgParams, InpaintParams, OutpaintParams
from studio.billing.credits import Account, balance
from studio.catalogue.recipes import RECIPE_VERSION, read_recipe
from studio.catalogue.requests import JobRequest, recipe_request, style_request
from studio.db.engine import session_for
from studio.db.tables import Job, utcnow
from studio.errors import Refused
from studio.jobs.submit import quote
from tests.studio.jobs.test_toolbox import _result_sha, box_mask, env, rows, run, stored_files, submit

__all__ = ["env"]  # the fixture, shared with the toolbox tests
PARAMS = Img2ImgParams(prompt="a red shoe", strength=0.75, steps=4, guidance=6.0, seed=5)
LORA = "lcm-sd15"  # data/styles.toml's SD 1.5 LoRA: the tiny preview LoRA in preview mode


def request(env, *loras: tuple[str, float], style: str = "artistic") -> JobRequest:
    return style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id=style, params=PARAMS, loras=loras
    )


def run_png(env, job_request: JobRequest) -> tuple[Job, np.ndarray, bytes]:
    """The job, its result's pixels and its PNG (recipe inside)."""
    job, image = run(env, job_request)
    return job, np.asarray(image.convert("RGB"), dtype=np.int16), env["store"].read(_result_sha(env, job))


def state(env) -> tuple:
    """What a refusal must leave as it was: rows, stored files and the user's balance."""
    with session_for(env["settings"].database_url) as session:
        credits = balance(session=session, account=Account(user_id=env["user"].id), now=utcnow())
    return rows(env), stored_files(env), credits


def test_a_lora_run_records_name_hash_and_weight_and_re_runs_identically(env):
    _, base, _ = run_png(env, request(env))
    job, with_lora, png = run_png(env, request(env, (LORA, 0.8)))
    preview_lora = env["settings"].models_dir / "preview-lora" / "pytorch_lora_weights.safetensors"
    assert job.recipe["loras"] == [{"name": LORA, "sha256": file_sha256(preview_lora), "weight": 0.8}]
    assert job.recipe["recipe_version"] == RECIPE_VERSION and read_recipe(png) == job.recipe
    assert np.abs(with_lora - base).mean() > 1

    # The next job without LoRAs gets the base model's pixels: nothing leaked through the cached pipeline.
    _, after, _ = run_png(env, request(env))
    assert np.array_equal(after, base)

    # The recipe read back from the PNG re-runs to the same pixels, at the same price.
    again = recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=read_recipe(png))
    assert again.loras == request(env, (LORA, 0.8)).loras
    rerun, rerun_pixels, _ = run_png(env, again)
    assert np.array_equal(rerun_pixels, with_lora) and rerun.cost == job.cost


def test_weight_zero_gives_the_base_pixels_and_loras_do_not_change_the_price(env):
    _, base, _ = run_png(env, request(env))
    job, zero, _ = run_png(env, request(env, (LORA, 0.0)))
    assert np.array_equal(zero, base)
    prices = [
        quote(settings=env["settings"], request=r, width=256, height=320).credits
        for r in (request(env), request(env, (LORA, 2.0)))
    ]
    assert prices[0] == prices[1] == job.cost


def test_a_recipe_whose_lora_changed_or_is_gone_is_refused_and_nothing_is_charged(env):
    _, _, png = run_png(env, request(env, (LORA, 1.0)))
    recipe = read_recipe(png)
    before = state(env)
    changed = recipe | {"loras": [recipe["loras"][0] | {"sha256": "0" * 64}]}
    with pytest.raises(Refused, match=r"'lcm-sd15' has changed since the result was made.*Nothing was charged"):
        submit(env, recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=changed))
    for loras, message in [
        ([{"name": "gone", "sha256": "0" * 64, "weight": 1.0}], "'gone', which this studio does not offer"),
        ([{"name": LORA, "sha256": "0" * 64, "weight": "heavy"}], "needs a numeric weight"),
        ("lcm-sd15", "should be a list"),
    ]:
        with pytest.raises(Refused, match=message):
            recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=recipe | {"loras": loras})
    assert state(env) == before


def test_an_old_recipe_without_loras_still_re_runs(env):
    _, pixels, png = run_png(env, request(env))
    recipe = read_recipe(png)
    assert "loras" not in recipe
    old = recipe | {"recipe_version": 5}
    _, again, _ = run_png(env, recipe_request(settings=env["settings"], catalogue=env["catalogue"], recipe=old))
    assert np.array_equal(again, pixels)


@pytest.mark.parametrize(
    ("loras", "style", "message"),
    [
        (((LORA, LIMITS["lora_weight"][1] + 0.1),), "artistic", "must be between -2 and 2"),
        (((LORA, LIMITS["lora_weight"][0] - 0.1),), "artistic", "must be between -2 and 2"),
        (((LORA, 1.0),), "sdxl-product", "trained for Stable Diffusion 1.x"),
        (((LORA, 1.0),) * (MAX_LORAS + 1), "artistic", f"at most {MAX_LORAS}"),
        (((LORA, 1.0), (LORA, 0.5)), "artistic", "added once"),
        ((("no-such-lora", 1.0),), "artistic", "no LoRA 'no-such-lora'"),
    ],
)
def test_a_bad_lora_is_refused_with_a_message_and_nothing_changes(env, loras, style, message):
    before = state(env)
    with pytest.raises(Refused, match=message):
        submit(env, request(env, *loras, style=style))
    assert state(env) == before


def test_an_inpaint_job_takes_loras_and_expanding_to_a_format_refuses_them(env):
    inpaint = InpaintParams(mask_blur=0)
    plain, lora = (
        style_request(
            settings=env["settings"],
            catalogue=env["catalogue"],
            style_id="artistic",
            params=PARAMS,
            inpaint=inpaint,
            loras=loras,
        )
        for loras in ((), ((LORA, 1.5),))
    )
    _, base = run(env, plain, mask=box_mask())
    job, with_lora = run(env, lora, mask=box_mask())
    assert job.task == "inpaint" and [item["weight"] for item in job.recipe["loras"]] == [1.5]
    assert not np.array_equal(np.asarray(with_lora), np.asarray(base))
    before = state(env)
    with pytest.raises(Refused, match="not expanding to a format"):
        style_request(
            settings=env["settings"],
            catalogue=env["catalogue"],
            style_id="artistic",
            params=PARAMS,
            inpaint=InpaintParams(mask_blur=0),
            outpaint=OutpaintParams(aspect="16:9"),
            loras=((LORA, 1.0),),
        ).check()
    assert state(env) == before
