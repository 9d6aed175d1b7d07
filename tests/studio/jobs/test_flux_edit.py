"""FLUX.1 styles and instruction edits (FLUX.1 Kontext, Qwen-Image-Edit and its Plus) through the queue, a worker
and History, on the tiny preview models of their families (nothing on the diffusers path patched). Cases are
generated from the shipped catalogue: every task of every style of these families, its recipe re-run identically,
and the refusals, which charge nothing."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image, ImageDraw
from sqlmodel import func, select

from pipelines.families import FAMILIES
from pipelines.params import MAX_PROMPT_CHARS, Img2ImgParams, InpaintParams, Task
from studio.accounts.users import get_user
from studio.billing.credits import Account, add_credits, balance
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import recipe_request, style_request
from studio.catalogue.styles import load_catalogue
from studio.config import PROJECT_ROOT
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, CreditKind, Job, JobStatus, utcnow
from studio.errors import Refused
from studio.jobs.queries import find_user_asset, list_user_jobs
from studio.jobs.submit import quote, submit_job, submit_sweep
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore, sha256_hex
from studio.media.validation import ValidatedImage, validate_image_bytes
from studio.sweeps.plan import EDIT_SWEEP, SecondAxis, SweepPlan, sweep_cells
from tests.support import gradient

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
NEW_FAMILIES = ("flux", "flux-kontext", "qwen-image-edit", "qwen-image-edit-plus")
STYLES = [style for style in CATALOGUE.styles.values() if style.family in NEW_FAMILIES]
OUTPUT_SIDE = 128  # renders of the tiny models: fast, and the same code as at 1024
SOURCE = (320, 256)  # 5:4, above the families' 256 px minimum
# 3 steps at strength 0.5: FLUX runs 2 (it rounds up), Stable Diffusion would run 1; an edit runs all 3.
PARAMS = Img2ImgParams(prompt="a glass bottle", strength=0.5, steps=3, guidance=3.0, seed=11)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def source_upload(width: int = SOURCE[0], height: int = SOURCE[1]) -> ValidatedImage:
    return validate_image_bytes(png(gradient(width, height)))


def centre_mask(size: tuple[int, int] = SOURCE) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((80, 64, 240, 192), fill=255)
    return mask


def cases() -> list:
    """(style, task, masked, references) for every task each style of the new families runs."""
    found = []
    for style in STYLES:
        family = FAMILIES[style.family]
        if style.task == Task.img2img:
            found += [(style, Task.img2img, False, 0), (style, Task.inpaint, True, 0)]
            continue
        found.append((style, Task.edit, False, 0))
        if family.pipelines.masked_edit is not None:
            found.append((style, Task.edit, True, 0))
        if family.max_images > 1:
            found.append((style, Task.edit, False, family.max_images - 1))
    return [
        pytest.param(*case, id=f"{case[0].id}-{case[1].value}" + ("-masked" if case[2] else "") + f"-{case[3]}ref")
        for case in found
    ]


@pytest.fixture
def env(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        user = get_user(session=session, username="admin")
        # Enough for a re-run (or a sweep and its single runs) at the new models' prices.
        add_credits(
            session=session,
            account=Account(user_id=user.id),
            amount=100,
            kind=CreditKind.grant,
            now=utcnow(),
            reason="t",
        )
        session.commit()
    settings = replace(studio_settings, max_output_side=OUTPUT_SIDE)
    return {"settings": settings, "store": AssetStore(settings.assets_dir), "user": user}


def request_for(env, style, task: Task, *, references: list[ValidatedImage] = (), params=PARAMS, **kwargs):
    inpaint = InpaintParams() if task == Task.inpaint else None
    return style_request(
        settings=env["settings"],
        catalogue=CATALOGUE,
        style_id=style.id,
        params=params,
        inpaint=inpaint,
        references=tuple(sha256_hex(reference.png_bytes) for reference in references),
        **kwargs,
    )


def submit(env, request, upload, **kwargs) -> Job:
    return submitted(env, submit_job, upload, request=request, **kwargs)


def sweep(env, cells, upload) -> list[Job]:
    return submitted(env, submit_sweep, upload, requests=cells)


def submitted(env, submit_function, upload, **kwargs):
    """`submit_function` (submit_job or submit_sweep) for the admin, on `upload`."""
    with write_session(env["settings"].database_url) as session:
        return submit_function(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=upload,
            original_name="bottle.png",
            **kwargs,
        )


def run_queue(env) -> None:
    worker = Worker(env["settings"], name="flux-edit-worker")
    while worker.run_once() is not None:
        pass


def finished(env, job_id: int) -> tuple[Job, bytes]:
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job_id)
        result = session.get(Asset, job.result_asset_id) if job.result_asset_id else None
    assert job.status is JobStatus.complete, job.error
    return job, env["store"].read(result.sha256)


def state(env) -> tuple:
    """Jobs, assets, ledger rows, the user's balance, and the files stored."""
    with session_for(env["settings"].database_url) as session:
        rows = tuple(session.exec(select(func.count()).select_from(t)).one() for t in (Job, Asset, CreditEntry))
        credits = balance(session=session, account=Account(user_id=env["user"].id), now=utcnow())
    return (*rows, credits, sorted(path.name for path in env["store"].root.rglob("*.png")))


@pytest.mark.parametrize(("style", "task", "masked", "references"), cases())
def test_every_task_of_each_new_family_runs_through_the_queue_and_its_recipe_reruns_identically(
    env, style, task, masked, references
):
    family = FAMILIES[style.family]
    refs = [source_upload(256, 256 + 16 * number) for number in range(references)]
    request = request_for(env, style, task, references=refs)
    mask = centre_mask() if masked else None
    job = submit(env, request, source_upload(), mask=mask, references=refs)
    assert (
        job.task == task.value
        and job.cost == quote(settings=env["settings"], request=request, width=320, height=256).credits
    )
    run_queue(env)
    job, result_png = finished(env, job.id)

    # The result: the family's render size (the source's aspect; a masked run pastes back into the source itself),
    # its own step count, in History with its recipe.
    width, height = SOURCE if masked else family.output_size(*SOURCE, OUTPUT_SIDE)
    with Image.open(io.BytesIO(result_png)) as result:
        assert result.size == (width, height)
    assert abs(width / height - SOURCE[0] / SOURCE[1]) < 0.1
    recipe = read_recipe(result_png)
    expected_steps = PARAMS.steps if task == Task.edit else family.denoising_steps(PARAMS.steps, PARAMS.strength)
    assert recipe["denoising_steps"] == request.denoising_steps == expected_steps
    assert job.progress_total == expected_steps
    assert (recipe["family"], recipe["task"], recipe["style"]) == (style.family, task.value, style.id)
    assert recipe["user_prompt"] == PARAMS.prompt and recipe["prompt"] == style.prompt_for(PARAMS.prompt)
    assert recipe.get("references", []) == [sha256_hex(reference.png_bytes) for reference in refs]
    with session_for(env["settings"].database_url) as session:
        assert [listed.id for listed, _, _ in list_user_jobs(session=session, user_id=env["user"].id)] == [job.id]
        # The references are the user's own sources, found by their hash (as a re-run finds them).
        stored = [
            find_user_asset(session=session, user_id=env["user"].id, sha256=sha256, kind=AssetKind.source)
            for sha256 in recipe.get("references", [])
        ]
    assert all(asset is not None for asset in stored)

    # The recipe re-runs as the same request and gives the same pixels.
    again = recipe_request(settings=env["settings"], catalogue=CATALOGUE, recipe=recipe)
    assert again.job_params() == request.job_params() and again.base_credits == request.base_credits
    rerun = submit(
        env,
        again,
        validate_image_bytes(env["store"].read(recipe["source_sha256"])),
        mask=Image.open(io.BytesIO(env["store"].read(recipe["mask_sha256"]))).convert("L") if masked else None,
        references=[validate_image_bytes(env["store"].read(asset.sha256)) for asset in stored],
    )
    run_queue(env)
    _, rerun_png = finished(env, rerun.id)
    with Image.open(io.BytesIO(result_png)) as first, Image.open(io.BytesIO(rerun_png)) as second:
        assert first.tobytes() == second.tobytes()


def edit_style(family: str):
    return next(style for style in STYLES if style.family == family)


def refusals() -> list:
    kontext, qwen, plus = (edit_style(name) for name in ("flux-kontext", "qwen-image-edit", "qwen-image-edit-plus"))
    flux = edit_style("flux")
    return [
        pytest.param(kontext, {"params": replace(PARAMS, prompt="  ")}, {}, "Write an instruction", id="empty"),
        pytest.param(
            kontext,
            {"params": replace(PARAMS, prompt="x" * (MAX_PROMPT_CHARS + 1))},
            {},
            f"limited to {MAX_PROMPT_CHARS} characters",
            id="too-long",
        ),
        pytest.param(
            flux, {"params": replace(PARAMS, negative_prompt="blurry")}, {}, "takes no negative prompt", id="negative"
        ),
        pytest.param(qwen, {}, {"mask": centre_mask()}, "edits the whole image only", id="mask-on-qwen"),
        pytest.param(qwen, {"references": 1}, {}, "takes no reference images", id="reference-on-qwen"),
        pytest.param(plus, {"references": 3}, {}, "takes up to 2 reference images", id="three-references"),
        pytest.param(
            flux,
            {"params": replace(PARAMS, strength=0.0), "task": Task.img2img},
            {},
            "runs no denoising step",
            id="no-step",
        ),
        pytest.param(flux, {"soft": True}, {"mask": centre_mask()}, "soft", id="soft-mask-on-flux"),
        pytest.param(kontext, {}, {"small_reference": True}, None, id="kontext-no-references"),
    ]


@pytest.mark.parametrize(("style", "asks", "sends", "message"), refusals())
def test_a_refused_flux_or_edit_submit_charges_nothing_and_stores_nothing(env, style, asks, sends, message):
    before = state(env)
    asks = dict(asks)
    refs = [source_upload(256, 256)] * asks.pop("references", 0)
    task = asks.pop("task", style.task)
    soft = asks.pop("soft", False)
    params = asks.pop("params", PARAMS)
    if sends.pop("small_reference", False):
        # A Kontext request names no references; sending one anyway is refused as not the edit's.
        refs, message = [source_upload(256, 256)], "not the ones this edit names"
        request = request_for(env, style, task, params=params)
    else:
        try:
            request = request_for(env, style, task, params=params, references=refs)
        except Refused as exc:
            assert message in str(exc)
            assert state(env) == before
            return
    if soft:
        request = replace(request, spec=replace(request.spec, task=Task.inpaint, inpaint=InpaintParams(soft=True)))
    with pytest.raises(Refused) as caught:
        submit(env, request, source_upload(), references=refs, **sends)
    assert message in str(caught.value)
    assert state(env) == before


# A LoRA's weight needs a LoRA on the run: tests/studio/jobs/test_edit_loras.py sweeps it.
@pytest.mark.parametrize("axis", [axis for axis in SecondAxis if axis is not SecondAxis.lora_weight])
def test_an_editors_sweep_runs_cell_by_cell_and_each_cell_is_its_single_edit(env, axis):
    """Seeds (or guidance scales) down one column; every cell has exactly the pixels of the same edit run alone."""
    style = edit_style("flux-kontext")
    values = (3.0, 4.0) if axis is SecondAxis.seed else (1.5, 4.0)
    cells = sweep_cells(request_for(env, style, Task.edit), SweepPlan(EDIT_SWEEP, axis, values))
    upload = source_upload()
    jobs = sweep(env, cells, upload)
    assert len({job.sweep_id for job in jobs}) == 1 and len(jobs) == 2
    run_queue(env)
    swept = [finished(env, job.id) for job in jobs]
    assert [job.recipe["sweep"]["mode"] for job, _ in swept] == ["separate", "separate"]
    for cell, (job, png_bytes_) in zip(cells, swept, strict=True):
        single = submit(env, cell, upload)
        run_queue(env)
        _, alone = finished(env, single.id)
        with Image.open(io.BytesIO(png_bytes_)) as one, Image.open(io.BytesIO(alone)) as two:
            assert one.tobytes() == two.tobytes()
        assert job.progress_total == PARAMS.steps


def test_an_edit_sweep_of_strengths_or_with_references_is_refused_and_nothing_is_charged(env):
    before = state(env)
    plus = edit_style("qwen-image-edit-plus")
    with pytest.raises(Refused, match="an edit has no strength"):
        sweep_cells(request_for(env, plus, Task.edit), SweepPlan((0.5, 1.0)))
    with pytest.raises(Refused, match="without reference images"):
        sweep_cells(request_for(env, plus, Task.edit, references=[source_upload(256, 256)]), SweepPlan(EDIT_SWEEP))
    # A sweep submit takes no reference images: the request naming one is refused before any charge.
    named = request_for(env, plus, Task.edit, references=[source_upload(256, 256)])
    with pytest.raises(Refused, match="not the ones this edit names"):
        sweep(env, [named], source_upload())
    assert state(env) == before
