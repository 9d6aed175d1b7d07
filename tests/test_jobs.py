"""The job service end to end on the tiny preview model (nothing on the diffusers path is patched)."""

import io

import pytest
from PIL import Image
from sqlmodel import select

from pipelines.params import Img2ImgParams
from studio.db import session_for
from studio.jobs import (
    JobInputError,
    get_user_job,
    list_user_jobs,
    submit_img2img,
    transform_now,
)
from studio.models import Asset, Job, JobStatus
from studio.recipes import read_recipe
from studio.storage import AssetStore
from studio.users import create_user, get_user
from studio.validation import validate_image_bytes
from tests.conftest import png_bytes

PARAMS = Img2ImgParams(prompt="a watercolor shoe", negative_prompt="blurry", strength=0.5, steps=4, seed=7)


@pytest.fixture
def env(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        yield {
            "session": session,
            "store": AssetStore(studio_settings.assets_dir),
            "settings": studio_settings,
            "user": get_user(session=session, username="admin"),
        }


def stored_files(settings):
    return [p for p in settings.assets_dir.rglob("*") if p.is_file()] if settings.assets_dir.exists() else []


def transform(env, params=PARAMS, image=None, **kwargs):
    upload = validate_image_bytes(image or png_bytes(256, 384))
    return transform_now(**env, upload=upload, original_name="shoe.png", params=params, **kwargs)


def test_a_transform_records_the_job_result_and_recipe(env):
    steps = []
    job = transform(env, on_progress=lambda step, total: steps.append((step, total)))

    assert job.status is JobStatus.complete, job.error
    assert steps == [(1, 2), (2, 2)]  # int(4 steps × 0.5) denoising steps, reported live
    assert (job.progress_step, job.progress_total) == (2, 2)
    result = env["session"].get(Asset, job.result_asset_id)
    png = env["store"].read(result.sha256)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (256, 384) == (result.width, result.height)
    recipe = read_recipe(png)
    assert recipe == job.recipe
    assert recipe["prompt"] == "a watercolor shoe" and recipe["seed"] == 7 and recipe["strength"] == 0.5
    assert recipe["model"] == "preview" and recipe["scheduler"] and recipe["versions"]["diffusers"]
    source = env["session"].get(Asset, job.source_asset_id)
    assert recipe["source_sha256"] == source.sha256 and source.original_name == "shoe.png"


def test_same_inputs_and_seed_give_the_same_pixels_and_another_seed_does_not(env):
    first, again = transform(env), transform(env)
    other = transform(env, params=Img2ImgParams(**{**PARAMS.__dict__, "seed": 8}))
    sha = {job.id: env["session"].get(Asset, job.result_asset_id).sha256 for job in (first, again, other)}
    assert sha[first.id] == sha[again.id]  # content-addressed: identical bytes, identical hash
    assert sha[other.id] != sha[first.id]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "  "}, "Write a prompt"),
        ({"strength": 1.5}, "Strength must be between 0 and 1"),
        ({"strength": 0.1, "steps": 4}, "runs no denoising step"),
        ({"steps": 0}, "Steps must be between"),
        ({"guidance": -1.0}, "Guidance must be between"),
        ({"seed": -3}, "Seed must be between"),
    ],
)
def test_bad_parameters_store_nothing(env, change, message):
    params = Img2ImgParams(**{**PARAMS.__dict__, **change})
    upload = validate_image_bytes(png_bytes())
    with pytest.raises(JobInputError, match=message):
        submit_img2img(
            session=env["session"],
            store=env["store"],
            user=env["user"],
            upload=upload,
            original_name="x.png",
            params=params,
            model="preview",
        )
    assert env["session"].exec(select(Job)).all() == []
    assert env["session"].exec(select(Asset)).all() == []
    assert stored_files(env["settings"]) == []


def test_an_unavailable_model_fails_the_job_with_a_clear_message(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    upload = validate_image_bytes(png_bytes())
    session, store, settings = env["session"], env["store"], env["settings"]
    job = submit_img2img(
        session=session,
        store=store,
        user=env["user"],
        upload=upload,
        original_name="x.png",
        params=PARAMS,
        model="nobody/no-such-model",
    )
    from studio.jobs import run_job

    job = run_job(job.id, session=session, store=store, settings=settings)
    assert job.status is JobStatus.failed
    assert "nobody/no-such-model" in job.error and "not available" in job.error
    assert job.result_asset_id is None and job.finished_at is not None


def test_an_unexpected_pipeline_error_fails_the_job_instead_of_leaving_it_processing(env, monkeypatch):
    import pipelines.img2img

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pipelines.img2img, "run_img2img", out_of_memory)
    job = transform(env)
    assert job.status is JobStatus.failed
    assert "out of memory" in job.error


def test_history_lists_only_the_users_own_jobs_newest_first(env):
    session = env["session"]
    other = create_user(session=session, username="other", password="other-password", email="o@example.com")
    first, second = transform(env), transform(env)
    rows = list_user_jobs(session=session, user_id=env["user"].id)
    assert [job.id for job, _, _ in rows] == [second.id, first.id]
    assert all(result is not None for _, _, result in rows)
    assert list_user_jobs(session=session, user_id=other.id) == []
    assert get_user_job(session=session, user_id=other.id, job_id=first.id) is None
