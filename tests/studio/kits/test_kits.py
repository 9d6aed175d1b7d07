"""Team brand kits through the studio: admins create, change and delete kits (each in the audit log, bad input
refused with nothing changed); a member's kit run goes through the queue, a worker and History with the kit's
template, negative prompt and LoRA hash in its recipe; another team's kit, a kit changed since the form was filled,
a LoRA file changed since the kit pinned it and a member's reference image beside the kit's are refused, leaving
jobs, ledger, balance and stored files as they were; a kit's reference image runs through the IP-Adapter and
retention keeps it while the kit has it. Presets pin LoRAs and kits; batches run a kit. On the tiny preview model, its
tiny LoRA and IP-Adapter."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import func, select

from pipelines.loras import file_sha256
from pipelines.params import LIMITS, MAX_LORAS, MAX_PROMPT_CHARS, Img2ImgParams
from studio.accounts.admin import create_team, grant_credits
from studio.accounts.users import create_user, get_user
from studio.batches.plan import batch_requests
from studio.batches.uploads import read_uploads
from studio.billing.credits import Account, balance
from studio.billing.pricing import Quality
from studio.catalogue.presets import PresetSettings, SeedPolicy, preset_request
from studio.catalogue.references import ReferenceImage
from studio.catalogue.requests import style_request
from studio.db.engine import session_for, write_session
from studio.db.tables import AuditAction, AuditEntry, BrandKit, Job, JobStatus, Plan, utcnow
from studio.errors import Forbidden, Refused
from studio.jobs.history import history_page
from studio.jobs.retention import purge_expired
from studio.jobs.submit import submit_batch, submit_job
from studio.kits.access import team_kits, usable_kit
from studio.kits.admin import delete_kit, pin_kit, write_kit
from studio.kits.requests import kit_request
from studio.kits.settings import KitReference
from studio.media.storage import AssetStore, sha256_hex
from studio.media.validation import validate_image_bytes
from tests.studio.jobs.test_toolbox import rows, stored_files
from tests.support import png_bytes

LORA = "lcm-sd15"  # data/styles.toml's SD 1.5 LoRA: the tiny preview LoRA in preview mode
PARAMS = Img2ImgParams(prompt="a red shoe", negative_prompt="grainy", strength=0.75, steps=4, guidance=6.0, seed=5)
KIT = {
    "model": "sd15",
    "prompt_template": "{prompt}, Acme spring campaign, pastel light",
    "negative_prompt": "watermark",
    "strength": 0.7,
    "guidance": 5.0,
    "quality": Quality.standard,
    "steps": 4,
    "loras": ((LORA, 0.8),),
}


@pytest.fixture
def env(studio, studio_settings):
    """An admin, a team Acme with a Pro member mia, and otto in team Other; 50 credits each for mia and otto."""
    url = studio_settings.database_url
    with write_session(url) as session:
        admin = get_user(session=session, username="admin")
        acme = create_team(session=session, actor=admin, name="Acme")
        other = create_team(session=session, actor=admin, name="Other")
        members = {}
        for name, team in (("mia", acme), ("otto", other)):
            user = create_user(session=session, username=name, password=f"{name}-password-1", email=f"{name}@x.io")
            user.team_id, user.plan = team.id, Plan.pro_monthly
            session.add(user)
            session.commit()
            grant_credits(session=session, actor=admin, amount=50, reason="tests", user_id=user.id)
            session.refresh(user)
            members[name] = user
        session.refresh(admin)
    from studio.catalogue.styles import load_catalogue
    from studio.jobs.worker import Worker

    return {
        "settings": studio_settings,
        "catalogue": load_catalogue(studio_settings.catalogue_path),
        "store": AssetStore(studio_settings.assets_dir),
        "admin": admin,
        "team": acme.id,
        "mia": members["mia"],
        "otto": members["otto"],
        "worker": Worker(studio_settings, name="kits-worker"),
    }


def pinned(env, **changes):
    return pin_kit(config=env["settings"], catalogue=env["catalogue"], **(KIT | changes))


def new_kit(env, name="Acme spring", **changes) -> BrandKit:
    with write_session(env["settings"].database_url) as session:
        return write_kit(
            session=session,
            actor=env["admin"],
            catalogue=env["catalogue"],
            team_id=env["team"],
            name=name,
            kit=pinned(env, **changes),
        )


def edit_kit(env, kit: BrandKit, *, name: str, **changes) -> BrandKit:
    with write_session(env["settings"].database_url) as session:
        return write_kit(
            session=session,
            actor=env["admin"],
            catalogue=env["catalogue"],
            kit_id=kit.id,
            name=name,
            kit=pinned(env, **changes),
        )


def kit_row(env, kit_id: int) -> BrandKit:
    with session_for(env["settings"].database_url) as session:
        return session.get(BrandKit, kit_id)


def make_request(env, kit: BrandKit, params=PARAMS):
    return kit_request(
        settings=env["settings"], catalogue=env["catalogue"], kit=kit, params=params, quality=Quality.standard
    )


def submit(env, user, request) -> Job:
    with write_session(env["settings"].database_url) as session:
        return submit_job(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=user,
            upload=validate_image_bytes(png_bytes(256, 320)),
            original_name="shoe.png",
            request=request,
        )


def state(env) -> tuple:
    """What a refusal must leave as it was: jobs, assets and ledger rows, stored files, kits, audit entries, and
    every balance."""
    with session_for(env["settings"].database_url) as session:
        credits = tuple(
            balance(session=session, account=Account(user_id=env[name].id), now=utcnow()) for name in ("mia", "otto")
        )
        counts = tuple(session.exec(select(func.count()).select_from(t)).one() for t in (BrandKit, AuditEntry))
    return rows(env), stored_files(env), counts, credits


def audit(env, action: AuditAction) -> list[AuditEntry]:
    with session_for(env["settings"].database_url) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def preview_lora_sha(env) -> str:
    return file_sha256(env["settings"].models_dir / "preview-lora" / "pytorch_lora_weights.safetensors")


# Admins: create, change, delete; each in the audit log


def test_an_admin_creates_changes_and_deletes_a_kit_each_in_the_audit_log(env):
    kit = new_kit(env)
    assert kit.settings["loras"] == [{"name": LORA, "weight": 0.8, "sha256": preview_lora_sha(env)}]
    [created] = audit(env, AuditAction.kit_create)
    assert created.target == "kit Acme spring · team Acme" and created.actor_id == env["admin"].id
    assert created.details["before"] is None and created.details["after"]["prompt_template"] == KIT["prompt_template"]

    edit_kit(env, kit, name="Acme summer", loras=((LORA, 0.5),))
    [changed] = audit(env, AuditAction.kit_change)
    assert changed.details["before"]["name"] == "Acme spring" and changed.details["after"]["name"] == "Acme summer"
    assert [lora["weight"] for lora in changed.details["after"]["loras"]] == [0.5]

    with write_session(env["settings"].database_url) as session:
        delete_kit(session=session, actor=env["admin"], kit_id=kit.id)
    [deleted] = audit(env, AuditAction.kit_delete)
    assert deleted.details["before"]["name"] == "Acme summer" and kit_row(env, kit.id) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt_template": "Acme spring campaign"}, r"needs \{prompt\} exactly once"),
        ({"prompt_template": "{prompt} and {prompt}"}, r"needs \{prompt\} exactly once"),
        ({"prompt_template": "{prompt}, {promt}"}, "no other braces"),
        ({"prompt_template": "{prompt}" + "x" * MAX_PROMPT_CHARS}, "limited to"),
        ({"model": "no-such-model"}, "no image model 'no-such-model'"),
        ({"model": "controlnet-canny"}, "no image model 'controlnet-canny'"),
        ({"model": "flux-kontext", "loras": ()}, "does not transform images"),
        ({"model": "flux-schnell", "loras": ()}, "take no negative prompt"),
        ({"model": "sdxl"}, "is for Stable Diffusion 1.x models"),
        ({"loras": (("no-such-lora", 1.0),)}, "no LoRA 'no-such-lora'"),
        ({"loras": ((LORA, LIMITS["lora_weight"][1] + 0.5),)}, "must be between -2 and 2"),
        ({"loras": ((LORA, 1.0), (LORA, 0.5))}, "once"),
        ({"loras": ((LORA, 1.0),) * (MAX_LORAS + 1)}, f"at most {MAX_LORAS}"),
        ({"strength": 1.5}, "Strength must be between"),
        ({"guidance": -1.0}, "Guidance must be between"),
        ({"steps": 0}, "takes 1 to"),
        ({"steps": 500}, "takes 1 to"),
        ({"reference": KitReference("0" * 64, LIMITS["ip_adapter_scale"][1] + 0.5)}, "scale is 0 to 1.5"),
    ],
)
def test_bad_kit_input_is_refused_with_a_message_and_nothing_changes(env, changes, message):
    before = state(env)
    with pytest.raises(Refused, match=message):
        new_kit(env, **changes)
    assert state(env) == before


def test_names_teams_and_actors_are_checked_and_nothing_changes(env):
    new_kit(env)
    before = state(env)
    with pytest.raises(Refused, match="already has a kit called 'Acme spring'"):
        new_kit(env)
    with pytest.raises(Refused, match="cannot be empty"):
        new_kit(env, name="  ")
    with write_session(env["settings"].database_url) as session, pytest.raises(Forbidden):
        write_kit(
            session=session,
            actor=env["mia"],
            catalogue=env["catalogue"],
            team_id=env["team"],
            name="Mine",
            kit=pinned(env),
        )
    with write_session(env["settings"].database_url) as session, pytest.raises(Refused, match="reference image"):
        write_kit(  # a reference the settings name, but no image and no stored asset
            session=session,
            actor=env["admin"],
            catalogue=env["catalogue"],
            team_id=env["team"],
            name="With reference",
            kit=pinned(env, reference=KitReference("0" * 64, 0.5)),
        )
    assert state(env) == before


# Members: run a kit through the queue, a worker and History; others are refused


def test_a_member_runs_the_kit_through_the_queue_worker_and_history(env):
    kit = new_kit(env)
    request = make_request(env, kit)
    assert request.spec.params.prompt == "a red shoe, Acme spring campaign, pastel light"
    assert request.spec.params.negative_prompt == "grainy, watermark" and request.style is None
    job = submit(env, env["mia"], request)
    assert env["worker"].run_once().id == job.id
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job.id)
        [row] = history_page(session=session, viewer=env["mia"]).rows
    assert job.status is JobStatus.complete, job.error
    assert job.recipe["loras"] == [{"name": LORA, "sha256": preview_lora_sha(env), "weight": 0.8}]
    assert job.recipe["kit"]["name"] == "Acme spring" and job.recipe["catalogue_model"] == "sd15"
    assert row.job.id == job.id and row.result is not None


def test_another_teams_member_never_sees_the_kit_and_cannot_submit_it(env):
    kit = new_kit(env)
    request = make_request(env, kit)  # a request someone built for the kit (a form, a crafted call)
    with session_for(env["settings"].database_url) as session:
        assert [k.name for k in team_kits(session=session, user=env["mia"])] == ["Acme spring"]
        assert team_kits(session=session, user=env["otto"]) == []
        with pytest.raises(Refused, match="no brand kit"):
            usable_kit(session=session, user=env["otto"], kit_id=kit.id)
    before = state(env)
    with pytest.raises(Refused, match=r"no brand kit.*Nothing was charged"):
        submit(env, env["otto"], request)
    assert state(env) == before


def test_a_kit_changed_or_deleted_since_the_form_was_filled_is_refused(env):
    kit = new_kit(env)
    request = make_request(env, kit)
    edit_kit(env, kit, name=kit.name, prompt_template="{prompt}, Acme autumn")
    before = state(env)
    with pytest.raises(Refused, match="has changed since these settings were made"):
        submit(env, env["mia"], request)
    with write_session(env["settings"].database_url) as session:
        delete_kit(session=session, actor=env["admin"], kit_id=kit.id)
    with pytest.raises(Refused, match="no brand kit"):
        submit(env, env["mia"], make_request(env, kit))
    assert state(env)[:2] == before[:2] and state(env)[3] == before[3]  # (the delete wrote its audit entry)


def test_a_kit_whose_lora_file_changed_since_it_was_pinned_is_refused(env):
    kit = new_kit(env)
    with write_session(env["settings"].database_url) as session:
        row = session.get(BrandKit, kit.id)
        row.settings = row.settings | {"loras": [{"name": LORA, "weight": 0.8, "sha256": "0" * 64}]}
        session.add(row)
        session.commit()
    before = state(env)
    with pytest.raises(Refused, match="pinned its LoRA 'lcm-sd15' at SHA-256 000000000000…"):
        make_request(env, kit_row(env, kit.id))
    assert state(env) == before


def reference_kit(env, scale: float = 0.6) -> tuple[BrandKit, str]:
    image = validate_image_bytes(png_bytes(256, 256, color=(40, 90, 200)))
    with write_session(env["settings"].database_url) as session:
        kit = write_kit(
            session=session,
            actor=env["admin"],
            catalogue=env["catalogue"],
            team_id=env["team"],
            name="With reference",
            kit=pinned(env, reference=KitReference(sha256_hex(image.png_bytes), scale)),
            store=env["store"],
            reference_image=image,
        )
    return kit, sha256_hex(image.png_bytes)


def test_a_kit_runs_with_its_reference_image_through_the_ip_adapter(env):
    kit, sha256 = reference_kit(env)
    assert env["store"].exists(sha256) and kit.settings["reference"] == {"image_sha256": sha256, "scale": 0.6}
    request = make_request(env, kit)
    assert (request.reference.image_sha256, request.reference.scale) == (sha256, 0.6)
    job = submit(env, env["mia"], request)
    assert env["worker"].run_once().id == job.id
    with session_for(env["settings"].database_url) as session:
        job = session.get(Job, job.id)
    assert job.status is JobStatus.complete, job.error
    assert (job.recipe["reference"]["sha256"], job.recipe["reference"]["scale"]) == (sha256, 0.6)
    assert job.recipe["kit"]["name"] == "With reference"
    assert job.recipe["loras"] == [{"name": LORA, "sha256": preview_lora_sha(env), "weight": 0.8}]


def test_a_members_own_reference_image_runs_only_with_a_kit_that_has_none(env):
    kit, _ = reference_kit(env)
    own = ReferenceImage(image_sha256=sha256_hex(png_bytes(64, 64)), scale=0.5)
    before = state(env)
    with pytest.raises(Refused, match="brings its own reference image"):
        kit_request(
            settings=env["settings"],
            catalogue=env["catalogue"],
            kit=kit,
            params=PARAMS,
            quality=Quality.standard,
            reference=own,
        )
    assert state(env) == before
    plain = kit_request(
        settings=env["settings"],
        catalogue=env["catalogue"],
        kit=new_kit(env),
        params=PARAMS,
        quality=Quality.standard,
        reference=own,
    )
    assert plain.reference == own


def test_retention_keeps_a_kits_reference_image_while_the_kit_has_it(env):
    kit, sha256 = reference_kit(env)
    later = utcnow() + timedelta(days=400)
    with write_session(env["settings"].database_url) as session:
        assert purge_expired(session=session, store=env["store"], days=30, now=later).assets == 0
    assert env["store"].exists(sha256)
    with write_session(env["settings"].database_url) as session:
        delete_kit(session=session, actor=env["admin"], kit_id=kit.id)
    with write_session(env["settings"].database_url) as session:
        assert purge_expired(session=session, store=env["store"], days=30, now=later).assets == 1
    assert not env["store"].exists(sha256)


# Presets pin LoRAs (by name, hash and weight) and kits


def test_a_preset_pins_its_loras_by_hash(env):
    request = style_request(
        settings=env["settings"], catalogue=env["catalogue"], style_id="artistic", params=PARAMS, loras=((LORA, 0.6),)
    )
    preset = PresetSettings.from_dict(PresetSettings.from_request(request).to_dict())
    assert preset.loras == ({"name": LORA, "weight": 0.6, "sha256": preview_lora_sha(env)},)
    with session_for(env["settings"].database_url) as session:
        rebuild = {"session": session, "user": env["mia"], "settings": env["settings"], "catalogue": env["catalogue"]}
        assert preset_request(preset, **rebuild).loras == request.loras
        changed = replace(preset, loras=({"name": LORA, "weight": 0.6, "sha256": "0" * 64},))
        with pytest.raises(Refused, match=r"other LoRA files or weights.*\(lcm-sd15\)"):
            preset_request(changed, **rebuild)


def test_a_preset_pins_a_kit_and_is_refused_once_its_model_or_lora_changed(env):
    kit = new_kit(env)
    preset = PresetSettings.from_dict(PresetSettings.from_request(make_request(env, kit)).to_dict())
    assert preset.kit == kit.id and preset.style is None and preset.lora_choices() == ()

    def apply(user):
        with session_for(env["settings"].database_url) as session:
            rebuild = {"settings": env["settings"], "catalogue": env["catalogue"]}
            return preset_request(preset, session=session, user=user, **rebuild)

    assert apply(env["mia"]).loras == make_request(env, kit).loras
    with pytest.raises(Refused, match="no brand kit"):
        apply(env["otto"])
    for changes, message in [
        ({"loras": ((LORA, 0.5),)}, "other LoRA files or weights"),
        ({"model": "realistic-vision"}, "results would not match earlier ones"),
    ]:
        edit_kit(env, kit, name=kit.name, **changes)
        with pytest.raises(Refused, match=message):
            apply(env["mia"])


# Batches run a kit: every result's recipe names the kit's LoRA hash


def test_a_batch_with_a_kit_runs_every_image_with_its_lora(env):
    kit = new_kit(env)
    staging = AssetStore(env["settings"].staging_dir)
    files = [(f"{name}.png", png_bytes(256, 256 + 8 * i)) for i, name in enumerate("abc")]
    uploads = read_uploads(files, staging=staging, max_pixels=10**9)
    requests = batch_requests(make_request(env, kit), 3, seed_policy=SeedPolicy.random, rng=random.Random(1))
    with write_session(env["settings"].database_url) as session:
        jobs = submit_batch(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["mia"],
            images=uploads.images,
            requests=requests,
        )
    while env["worker"].run_once() is not None:
        pass
    with session_for(env["settings"].database_url) as session:
        done = [session.get(Job, job.id) for job in jobs]
    assert [job.status for job in done] == [JobStatus.complete] * 3
    assert {job.recipe["loras"][0]["sha256"] for job in done} == {preview_lora_sha(env)}
    assert len({job.recipe["seed"] for job in done}) == 3

    before = state(env)
    with write_session(env["settings"].database_url) as session, pytest.raises(Refused, match="no brand kit"):
        submit_batch(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["otto"],
            images=uploads.images,
            requests=requests,
        )
    assert state(env) == before
