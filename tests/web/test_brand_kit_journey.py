"""AppTest journeys (issue 19): an admin creates a brand kit for a team on Admin · Brand kits; a member of the team
picks it first thing in Batch's style picker, runs a batch, and every result's recipe names the kit's LoRA hash;
a member of another team never sees the kit. A preset of the kit applies until an admin changes the kit's LoRAs."""

from __future__ import annotations

from sqlmodel import select

from pipelines.loras import file_sha256
from studio.accounts.admin import create_team
from studio.accounts.users import create_user, get_user
from studio.billing.pricing import Quality
from studio.catalogue.styles import load_catalogue
from studio.db.engine import session_for, write_session
from studio.db.tables import AuditAction, AuditEntry, BrandKit, JobStatus, Plan, Preset
from studio.jobs.worker import Worker
from studio.kits.admin import pin_kit, write_kit
from studio.kits.requests import kit_style_id
from studio.web.styles import OWN_SETTINGS
from tests.support import ADMIN_PASSWORD, all_jobs, log_in, png_bytes, texts

LORA = "lcm-sd15"
PASSWORD = "member-password-19"
KIT_FIELDS = {
    "model": "sd15",
    "prompt_template": "{prompt}, Acme spring campaign",
    "negative_prompt": "",
    "strength": 0.6,
    "guidance": 5.0,
    "quality": Quality.standard,
    "steps": 4,
}


def teams_with_members(settings) -> dict[str, int]:
    """Acme (mia) and Other (otto), both members on Pro; the team ids by name."""
    with write_session(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        teams = {name: create_team(session=session, actor=admin, name=name).id for name in ("Acme", "Other")}
        for username, team in (("mia", "Acme"), ("otto", "Other")):
            user = create_user(session=session, username=username, password=PASSWORD, email=f"{username}@x.io")
            user.team_id, user.plan = teams[team], Plan.pro_monthly
            session.add(user)
            session.commit()
    return teams


def test_an_admin_makes_a_kit_and_a_member_batches_with_it(studio, studio_settings):
    teams = teams_with_members(studio_settings)

    # The admin creates the kit for Acme.
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/admin/kits.py").run()
    at.selectbox(key="kits.team").set_value(teams["Acme"]).run()
    form = f"kits.{teams['Acme']}.0"
    at.text_input(key=f"{form}.name").input("Acme spring")
    at.selectbox(key=f"{form}.model").set_value("sd15")
    at.text_input(key=f"{form}.template").input("{prompt}, Acme spring campaign")
    at.slider(key=f"{form}.steps").set_value(4)
    at.multiselect(key=f"{form}.loras").set_value([LORA]).run()
    at.slider(key=f"{form}.weight.{LORA}").set_value(0.8)
    at.button(key="kits.save").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert any("Saved the kit Acme spring for Acme" in s for s in texts(at.success))
    with session_for(studio_settings.database_url) as session:
        [kit] = session.exec(select(BrandKit)).all()
        [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == AuditAction.kit_create)).all()
    lora_sha = file_sha256(studio_settings.models_dir / "preview-lora" / "pytorch_lora_weights.safetensors")
    assert kit.settings["loras"] == [{"name": LORA, "weight": 0.8, "sha256": lora_sha}]
    assert entry.target == "kit Acme spring · team Acme"

    # A member of Acme sees the kit first in Batch's style picker; choosing it fills the form.
    at = log_in("mia", PASSWORD)
    at.switch_page("pages/batch.py").run()
    files = [("a.png", png_bytes(256, 256), "image/png"), ("b.png", png_bytes(256, 264), "image/png")]
    at.file_uploader(key="batch.files").set_value(files).run()
    picker = at.selectbox(key="batch.style")
    assert picker.options[0] == "Your own prompt and settings"
    assert picker.options[1].startswith("Acme spring · brand kit")  # the team's kits first, then the catalogue's
    picker.set_value(kit_style_id(kit.id)).run()
    assert at.slider(key="batch.steps").value == 4 and at.slider(key="batch.strength").value == kit.settings["strength"]
    assert any(f"pinned by file hash: {LORA} × 0.8" in caption for caption in texts(at.caption))
    at.text_area(key="batch.prompt").input("a sneaker").run()
    at.button(key="batch_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)

    worker = Worker(studio_settings, name="kit-worker")
    while worker.run_once() is not None:
        pass
    jobs = all_jobs(studio_settings)
    assert len(jobs) == 2 and {job.status for job in jobs} == {JobStatus.complete}
    for job in jobs:
        assert job.recipe["loras"] == [{"name": LORA, "sha256": lora_sha, "weight": 0.8}]
        assert job.recipe["kit"]["name"] == "Acme spring"
        assert job.recipe["prompt"] == "a sneaker, Acme spring campaign"
    at.run()
    assert any("2 complete · 0 failed" in caption for caption in texts(at.caption))

    # A member of another team never sees it.
    at = log_in("otto", PASSWORD)
    at.switch_page("pages/batch.py").run()
    assert not [option for option in at.selectbox(key="batch.style").options if "Acme spring" in option]


def test_a_kit_preset_applies_until_an_admin_changes_the_kits_loras(studio, studio_settings):
    teams = teams_with_members(studio_settings)
    catalogue = load_catalogue(studio_settings.catalogue_path)

    def save(kit_id: int | None, weight: float) -> BrandKit:
        kit = pin_kit(config=studio_settings, catalogue=catalogue, loras=((LORA, weight),), **KIT_FIELDS)
        with write_session(studio_settings.database_url) as session:
            admin = get_user(session=session, username="admin")
            return write_kit(
                session=session,
                actor=admin,
                catalogue=catalogue,
                name="Acme spring",
                kit=kit,
                team_id=teams["Acme"],
                kit_id=kit_id,
            )

    kit = save(None, 0.8)
    at = log_in("mia", PASSWORD)
    at.switch_page("pages/batch.py").run()
    at.selectbox(key="batch.style").set_value(kit_style_id(kit.id)).run()
    at.text_input(key="batch.preset_name").input("Spring look").run()
    at.button(key="batch.preset_save").click().run()
    assert not at.error, texts(at.error)
    with session_for(studio_settings.database_url) as session:
        [preset] = session.exec(select(Preset)).all()
    assert preset.settings["kit"] == kit.id and preset.settings["loras"][0]["weight"] == 0.8

    at.selectbox(key="batch.style").set_value(OWN_SETTINGS).run()
    at.button(key="batch.preset_apply").click().run()
    assert not at.error, texts(at.error)
    assert at.selectbox(key="batch.style").value == kit_style_id(kit.id)

    save(kit.id, 0.5)  # the admin changes the kit's LoRA weight: the preset no longer gives its look
    at.selectbox(key="batch.style").set_value(OWN_SETTINGS).run()
    at.button(key="batch.preset_apply").click().run()
    assert any("other LoRA files or weights" in error for error in texts(at.error)), texts(at.error)
    assert at.selectbox(key="batch.style").value == OWN_SETTINGS
