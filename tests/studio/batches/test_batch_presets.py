"""Presets, batches (with a poisoned image) and the command line, through the queue and a worker."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlmodel import select

from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user, get_user
from studio.batches.plan import batch_requests
from studio.batches.results import batch_zip, download_name, get_user_batch
from studio.batches.uploads import read_uploads
from studio.billing.credits import Account, balance
from studio.billing.plans import allocate_monthly
from studio.catalogue.presets import (
    PresetSettings,
    SeedPolicy,
    delete_preset,
    find_preset,
    preset_request,
    rename_preset,
    save_preset,
    visible_presets,
)
from studio.catalogue.requests import custom_request, style_request
from studio.catalogue.styles import load_catalogue
from studio.cli import main, runs
from studio.db.engine import session_for, write_session
from studio.db.tables import JobStatus, Plan, Preset, utcnow
from studio.errors import Refused
from studio.jobs.submit import submit_batch
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from tests.support import png_bytes, zip_of

PARAMS = Img2ImgParams(prompt="studio shot", negative_prompt="blurry", strength=0.5, steps=4, guidance=6.0, seed=3)


@pytest.fixture
def env(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        admin.plan = Plan.pro_monthly
        session.add(admin)
        allocate_monthly(session=session, user=admin, now=utcnow())  # this month's Pro credits, before measuring
        session.commit()
        session.refresh(admin)
    return {
        "settings": studio_settings,
        "catalogue": load_catalogue(studio_settings.catalogue_path),
        "store": AssetStore(studio_settings.assets_dir),
        "user": admin,
        "worker": Worker(studio_settings, name="batch-worker"),
        "staging": AssetStore(studio_settings.staging_dir),
    }


def read(files, staging: AssetStore, max_pixels: int = 10**9):
    return read_uploads(files, staging=staging, max_pixels=max_pixels)


def credits(env, user=None) -> int:
    with session_for(env["settings"].database_url) as session:
        return balance(session=session, account=Account(user_id=(user or env["user"]).id), now=utcnow())


def artistic(env):
    return style_request(settings=env["settings"], catalogue=env["catalogue"], style_id="artistic", params=PARAMS)


def rebuild(env, session) -> dict:
    """What preset_request needs besides the preset: who applies it, in which studio."""
    return {"session": session, "user": env["user"], "settings": env["settings"], "catalogue": env["catalogue"]}


# Presets


def test_a_preset_pins_the_settings_and_rebuilds_the_same_request(env):
    request = artistic(env)
    with write_session(env["settings"].database_url) as session:
        save_preset(
            session=session, owner=env["user"], name="Spring campaign", preset=PresetSettings.from_request(request)
        )
    with session_for(env["settings"].database_url) as session:
        stored = PresetSettings.from_dict(
            find_preset(session=session, user=env["user"], name="Spring campaign").settings
        )
        again = preset_request(stored, **rebuild(env, session))
        assert again.spec == request.spec and again.model == request.model and again.style == "artistic"
        assert preset_request(stored, **rebuild(env, session), seed=77).spec.params.seed == 77


def test_a_preset_whose_style_now_runs_another_model_is_refused(env):
    preset = PresetSettings.from_request(artistic(env))
    moved = PresetSettings.from_dict(preset.to_dict() | {"model": "stable-diffusion-v1-5/stable-diffusion-v1-5"})
    with session_for(env["settings"].database_url) as session, pytest.raises(Refused, match="would not match earlier"):
        preset_request(moved, **rebuild(env, session))


def test_presets_are_personal_or_shared_with_the_team(env):
    url = env["settings"].database_url
    with write_session(url) as session:
        from studio.db.tables import Team

        team = Team(name="Marketing")
        session.add(team)
        session.commit()
        owner = create_user(session=session, username="olga", password="password-1", email="o@x.io", team_id=team.id)
        mate = create_user(session=session, username="mats", password="password-2", email="m@x.io", team_id=team.id)
        outsider = create_user(session=session, username="otto", password="password-3", email="t@x.io")
        settings = PresetSettings.from_request(artistic(env))
        save_preset(session=session, owner=owner, name="Mine", preset=settings)
        shared = save_preset(session=session, owner=owner, name="Team look", preset=settings, shared=True)
        with pytest.raises(Refused, match="no team"):
            save_preset(session=session, owner=outsider, name="x", preset=settings, shared=True)
    with session_for(url) as session:
        assert [p.name for p in visible_presets(session=session, user=owner)] == ["Mine", "Team look"]
        assert [p.name for p in visible_presets(session=session, user=mate)] == ["Team look"]
        assert visible_presets(session=session, user=outsider) == []
    with write_session(url) as session:
        with pytest.raises(Refused, match="only change your own"):
            rename_preset(session=session, user=mate, preset_id=shared.id, name="Hijacked")
        rename_preset(session=session, user=owner, preset_id=shared.id, name="Summer look")
        with pytest.raises(Refused, match="already a preset called 'Mine'"):
            rename_preset(session=session, user=owner, preset_id=shared.id, name="Mine")
        delete_preset(session=session, user=owner, preset_id=shared.id)
        assert [p.name for p in session.exec(select(Preset)).all()] == ["Mine"]


# Batches


def test_uploads_expand_zips_and_list_what_cannot_be_used(tmp_path):
    good, other = png_bytes(256, 256), png_bytes(300, 260)
    uploads = read(
        [
            ("a.png", good),
            (
                "pack.zip",
                zip_of({"shoes/b.png": other, "__MACOSX/._b.png": b"junk", "notes.txt": b"hi", "c.png": b"x"}),
            ),
            ("broken.zip", b"PK\x03\x04 not really"),
            ("d.gif", b"GIF89a...."),
        ],
        AssetStore(tmp_path / "staging"),
    )
    assert [image.name for image in uploads.images] == ["a.png", "b.png"]
    reasons = dict(uploads.rejected)
    assert set(reasons) == {"c.png", "broken.zip", "d.gif"}
    assert "GIF" in reasons["d.gif"] and "not a readable ZIP" in reasons["broken.zip"]


def test_seed_policies():
    request_seeds = [r.spec.params.seed for r in batch_requests(_request(), 3, seed_policy=SeedPolicy.fixed, rng=None)]
    assert request_seeds == [3, 3, 3]
    random_seeds = [
        r.spec.params.seed for r in batch_requests(_request(), 3, seed_policy=SeedPolicy.random, rng=random.Random(1))
    ]
    assert len(set(random_seeds)) == 3


def _request():
    from studio.config import get_settings

    return custom_request(settings=get_settings(), params=PARAMS)


def test_a_batch_with_a_poisoned_image_refunds_only_that_image(env, monkeypatch):
    import studio.jobs.worker

    real_render = studio.jobs.worker.render_job

    def render(job, **kwargs):
        with session_for(env["settings"].database_url) as session:
            from studio.db.tables import Asset

            name = session.get(Asset, job.source_asset_id).original_name
        if name == "poison.png":
            raise RuntimeError("this image broke the pipeline")
        return real_render(job, **kwargs)

    monkeypatch.setattr(studio.jobs.worker, "render_job", render)
    files = [(f"{n}.png", png_bytes(256, 256 + 8 * i)) for i, n in enumerate(["a", "poison", "c"])]
    images = read(files, env["staging"])
    before = credits(env)
    with write_session(env["settings"].database_url) as session:
        jobs = submit_batch(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            images=images.images,
            requests=[artistic(env)] * 3,
        )
    assert len({job.batch_id for job in jobs}) == 1 and credits(env) == before - 6  # artistic: 2 credits each
    while env["worker"].run_once() is not None:
        pass
    with session_for(env["settings"].database_url) as session:
        batch = get_user_batch(session=session, user_id=env["user"].id, batch_id=jobs[0].batch_id)
    assert [item.job.status for item in batch.items] == [JobStatus.complete, JobStatus.failed, JobStatus.complete]
    assert "broke the pipeline" in batch.items[1].job.error
    assert credits(env) == before - 4

    archive = zipfile.ZipFile(io.BytesIO(batch_zip(batch, env["store"])))
    assert sorted(archive.namelist()) == ["a-img2img.png", "c-img2img.png", "manifest.csv"]
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [(row["source"], row["status"], row["credits"]) for row in manifest] == [
        ("a.png", "complete", "2"),
        ("poison.png", "failed", "2"),
        ("c.png", "complete", "2"),
    ]
    assert download_name(batch, "Artistic Style").endswith("-artistic-style-3-images.zip")


def test_batches_are_for_pro_plans(env):
    with write_session(env["settings"].database_url) as session:
        free = create_user(session=session, username="fred", password="password-1", email="f@x.io")
    images = read([("a.png", png_bytes())], env["staging"]).images
    with write_session(env["settings"].database_url) as session, pytest.raises(Refused, match="Pro plans"):
        submit_batch(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=free,
            images=images,
            requests=[artistic(env)],
        )


# The command line


def test_the_batch_command_runs_a_preset_over_a_folder(env, tmp_path: Path, capsys):
    with write_session(env["settings"].database_url) as session:
        save_preset(session=session, owner=env["user"], name="Look", preset=PresetSettings.from_request(artistic(env)))
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "one.png").write_bytes(png_bytes(256, 256))
    (inputs / "more.zip").write_bytes(zip_of({"two.png": png_bytes(256, 264)}))
    (inputs / "readme.txt").write_text("not an image")
    code = main.main(
        ["batch", "--user", "admin", "--preset", "Look", "--input", str(inputs), "--output", str(tmp_path / "out")]
    )
    out = capsys.readouterr().out
    assert code == runs.EXIT_OK, out
    assert "2 image(s): 2 complete, 0 failed" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one-img2img.png", "two-img2img.png"]
    with Image.open(tmp_path / "out" / "one-img2img.png") as result:
        assert "img2img-studio:recipe" in result.info

    assert main.main(["batch", "--user", "admin", "--preset", "Nope", "--input", str(inputs), "--output", "x"]) == 2
    assert "no preset called 'Nope'" in capsys.readouterr().err


def test_the_transform_command_and_its_exit_code_on_failure(env, tmp_path: Path, capsys, monkeypatch):
    source = tmp_path / "shoe.png"
    source.write_bytes(png_bytes(256, 256))
    args = [
        "transform",
        "--user",
        "admin",
        str(source),
        "--output",
        str(tmp_path / "out"),
        "--prompt",
        "red",
        "--steps",
        "4",
    ]
    assert main.main(args) == runs.EXIT_OK
    assert (tmp_path / "out" / "shoe-img2img.png").is_file()

    import studio.jobs.worker

    monkeypatch.setattr(studio.jobs.worker, "render_job", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    assert main.main(args) == runs.EXIT_FAILURES
    assert "1 failed" in capsys.readouterr().out


def test_the_commands_document_themselves():
    help_text = main.build_parser().format_help()
    assert "batch" in help_text and "transform" in help_text
    with pytest.raises(SystemExit) as exited:
        main.main(["batch", "--help"])
    assert exited.value.code == 0
