"""LoRAs registered on the Models page: the file is checked to be a LoRA of the family (a bad one changes nothing),
its SHA-256 recorded; registering and removing are audited; a registered LoRA is offered and resolved like the
catalogue's and runs through the queue; a job queued before its LoRA was removed still runs from the file and hash it
recorded, and re-running its recipe afterwards is refused, charging nothing."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlmodel import func, select
from streamlit.testing.v1 import AppTest

from pipelines.loras import ensure_preview_lora, file_sha256
from pipelines.params import Img2ImgParams
from studio.accounts.admin import register_lora, remove_lora
from studio.accounts.users import create_user, get_user
from studio.billing.credits import Account, balance
from studio.catalogue.loras import lora_sha256, registered_loras, with_registered_loras
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import custom_request, recipe_request
from studio.catalogue.styles import load_catalogue
from studio.db.engine import session_for, write_session
from studio.db.tables import (
    Asset,
    AuditAction,
    AuditEntry,
    CreditEntry,
    Job,
    JobStatus,
    RegisteredLora,
    Role,
    utcnow,
)
from studio.errors import Forbidden, Refused
from studio.jobs.submit import submit_job
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import APP, TIMEOUT, png_bytes, sign_in_as

PARAMS = Img2ImgParams(prompt="a red shoe", strength=0.75, steps=4, guidance=6.0, seed=5)


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory) -> dict[str, Path]:
    """A user's tiny LoRA files of two families, and files that are not LoRAs."""
    root = tmp_path_factory.mktemp("user-loras")
    files = {family: ensure_preview_lora(root / family, family) for family in ("sd15", "flux-kontext")}
    (root / "notes.safetensors").write_bytes(b"not a safetensors file at all")
    files["not-safetensors"] = root / "notes.safetensors"
    return files


@pytest.fixture
def env(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        admin = get_user(session=session, username="admin")
    return {"settings": studio_settings, "catalogue": load_catalogue(studio_settings.catalogue_path), "admin": admin}


def register(env, name: str, location: Path | str, family: str = "sd15", actor=None):
    with write_session(env["settings"].database_url) as session:
        return register_lora(
            session=session,
            actor=actor or env["admin"],
            catalogue=env["catalogue"],
            settings=env["settings"],
            name=name,
            location=str(location),
            family=family,
            about="our brand look",
        )


def catalogue(env):
    with session_for(env["settings"].database_url) as session:
        return with_registered_loras(env["catalogue"], session=session)


def state(env) -> tuple:
    """Registered LoRAs, audit entries, jobs, assets, ledger rows and the admin's balance."""
    with session_for(env["settings"].database_url) as session:
        counts = tuple(
            session.exec(select(func.count()).select_from(t)).one()
            for t in (RegisteredLora, AuditEntry, Job, Asset, CreditEntry)
        )
        return (*counts, balance(session=session, account=Account(user_id=env["admin"].id), now=utcnow()))


def audits(env, action: AuditAction) -> list[AuditEntry]:
    with session_for(env["settings"].database_url) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def submit(env, request) -> Job:
    with write_session(env["settings"].database_url) as session:
        return submit_job(
            session=session,
            store=AssetStore(env["settings"].assets_dir),
            settings=env["settings"],
            user=env["admin"],
            upload=validate_image_bytes(png_bytes(256, 320)),
            original_name="shoe.png",
            request=request,
        )


def test_a_registered_lora_is_recorded_audited_offered_and_resolved_like_the_catalogues(env, lora_files):
    row = register(env, "brand", lora_files["sd15"])
    assert (row.family, row.sha256, row.registered_by) == ("sd15", file_sha256(lora_files["sd15"]), env["admin"].id)
    [entry] = audits(env, AuditAction.lora_register)
    assert entry.target == "LoRA brand" and entry.details["after"]["sha256"] == row.sha256

    offered = catalogue(env)
    assert [entry.name for entry in offered.loras_for("sd15")] == ["lcm-sd15", "brand"]
    request = custom_request(settings=env["settings"], params=PARAMS, catalogue=offered, loras=(("brand", 0.5),))
    assert [(lora.name, lora.weight) for lora in request.loras] == [("brand", 0.5)]
    with session_for(env["settings"].database_url) as session:
        assert registered_loras(session=session)["brand"].sha256 == row.sha256  # pinned


def test_a_queued_job_runs_from_its_recorded_hash_after_its_lora_is_removed_and_a_re_run_is_refused(env, lora_files):
    register(env, "brand", lora_files["sd15"])
    request = custom_request(settings=env["settings"], params=PARAMS, catalogue=catalogue(env), loras=(("brand", 1.0),))
    job = submit(env, request)
    with write_session(env["settings"].database_url) as session:
        assert remove_lora(session=session, actor=env["admin"], name="brand") == "brand"
    [entry] = audits(env, AuditAction.lora_remove)
    assert entry.target == "LoRA brand" and entry.details["before"]["family"] == "sd15"
    assert "brand" not in catalogue(env).loras

    assert Worker(env["settings"], name="lora-worker").run_once().id == job.id
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job.id)
        assert job.status is JobStatus.complete, job.error
        png = AssetStore(env["settings"].assets_dir).read(session.get(Asset, job.result_asset_id).sha256)
    assert read_recipe(png)["loras"] == [{"name": "brand", "sha256": request.loras[0].sha256, "weight": 1.0}]
    before = state(env)
    with pytest.raises(Refused, match="'brand', which this studio does not offer"):
        recipe_request(settings=env["settings"], catalogue=catalogue(env), recipe=read_recipe(png))
    assert state(env) == before


@pytest.mark.parametrize(
    ("name", "location", "family", "message"),
    [
        ("brand", "not-safetensors", "sd15", "is not a safetensors file"),
        ("brand", "flux-kontext", "sd15", "not the UNet layers of a Stable Diffusion 1.x LoRA"),
        ("brand", "sd15", "flux-kontext", "not the transformer layers of a FLUX.1 Kontext LoRA"),
        ("brand", "sd15", "sdxl", "reads text embeddings \\[32\\] wide"),
        ("brand", "/no/such/file.safetensors", "sd15", "no file or folder"),
        ("brand", "sd15", "no-such-family", "no model family"),
        ("lcm-sd15", "sd15", "sd15", "already a LoRA named 'lcm-sd15'"),
        ("", "sd15", "sd15", "Give the LoRA a name"),
        ("brand", "", "sd15", "Give the LoRA's location"),
    ],
)
def test_a_bad_registration_is_refused_with_a_message_and_changes_nothing(
    env, lora_files, name, location, family, message
):
    before = state(env)
    with pytest.raises(Refused, match=message):
        register(env, name, lora_files.get(location, location), family)
    assert state(env) == before


def test_a_taken_name_a_non_admin_and_removing_an_unknown_lora_are_refused(env, lora_files):
    register(env, "brand", lora_files["sd15"])
    before = state(env)
    with pytest.raises(Refused, match="already a LoRA named 'brand'"):
        register(env, "brand", lora_files["sd15"])
    with write_session(env["settings"].database_url) as session:
        member = create_user(
            session=session, username="mia", password="a long password 1", email="mia@example.com", role=Role.member
        )
        session.commit()
    before = state(env)
    with pytest.raises(Forbidden):
        register(env, "other", lora_files["sd15"], actor=member)
    with write_session(env["settings"].database_url) as session, pytest.raises(Refused, match="no registered LoRA"):
        remove_lora(session=session, actor=env["admin"], name="lcm-sd15")
    assert state(env) == before


def test_a_changed_file_of_a_registered_lora_is_refused(env, lora_files, tmp_path):
    copy = tmp_path / "brand.safetensors"
    shutil.copy(lora_files["sd15"], copy)
    register(env, "brand", copy)
    entry = catalogue(env).loras["brand"]
    copy.write_bytes(copy.read_bytes() + b" ")  # the file changes after it was registered
    real = replace(env["settings"], model="some/real-model")  # not preview mode: the pinned hash applies
    with pytest.raises(Refused, match="no longer has the SHA-256"):
        lora_sha256(entry, real)


def test_the_models_page_registers_and_removes_a_lora(studio, studio_settings, lora_files):
    at = sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()
    at.switch_page("pages/admin/models.py").run()
    at.text_input(key="models.lora_name").input("brand")
    at.text_input(key="models.lora_location").input(str(lora_files["flux-kontext"]))
    at.selectbox(key="models.lora_family").set_value("sd15")
    at.button[[b.label for b in at.button].index("Register")].click().run()
    assert not at.exception, at.exception
    assert any("not the UNet layers" in error.value for error in at.error)
    with session_for(studio_settings.database_url) as session:
        assert registered_loras(session=session) == {}

    at.text_input(key="models.lora_location").input(str(lora_files["sd15"]))
    at.button[[b.label for b in at.button].index("Register")].click().run()
    assert not at.exception, at.exception
    assert any("Registered the LoRA brand" in success.value for success in at.success)
    with session_for(studio_settings.database_url) as session:
        assert list(registered_loras(session=session)) == ["brand"]

    # Offered on the Transform page's LoRA picker, beside the catalogue's.
    at.switch_page("pages/transform.py").run()
    assert "brand" in at.multiselect(key="transform.loras").options
    at = sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()
    at.switch_page("pages/admin/models.py").run()
    at.button(key="models.lora_remove.brand").click().run()
    assert not at.exception, at.exception
    with session_for(studio_settings.database_url) as session:
        assert registered_loras(session=session) == {}
