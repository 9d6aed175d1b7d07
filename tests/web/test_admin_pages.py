"""AppTest journeys through the admin pages and the Analytics page (no model runs: seeded history)."""

from datetime import timedelta

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from studio.accounts.users import create_user
from studio.billing.credits import Account, balance
from studio.catalogue.styles import load_catalogue
from studio.config import PROJECT_ROOT
from studio.db.engine import get_engine, session_for
from studio.db.tables import AuditAction, AuditEntry, Job, JobStatus, Role, Team, User, utcnow
from studio.devtools.seed import SeedOptions, seed
from studio.web.analytics import PERCENTILE_NOTE
from tests.support import ADMIN_PASSWORD, MEMBER_PASSWORD, log_in, signed_in_page, texts

ADMIN_PAGES = ("admin/users", "admin/teams", "admin/credits", "admin/analytics", "admin/models")


def form(at: AppTest, form_id: str):
    [found] = [block for block in at.get("form") if block.proto.form.form_id == form_id]
    return found


@pytest.fixture
def mia(studio, studio_settings) -> User:
    with session_for(studio_settings.database_url) as session:
        return create_user(session=session, username="mia", password=MEMBER_PASSWORD, email="mia@example.com")


def audit_actions(settings) -> list[AuditAction]:
    with session_for(settings.database_url) as session:
        return [entry.action for entry in session.exec(select(AuditEntry).order_by(AuditEntry.id))]


@pytest.mark.parametrize("name", ADMIN_PAGES)
def test_a_member_opening_an_admin_page_is_refused(mia, name):
    at = signed_in_page(name, "mia")
    assert "This page is for administrators only." in texts(at.error)
    assert not at.dataframe and not at.get("plotly_chart") and not at.button


def test_admins_find_every_admin_page_in_the_navigation(studio, mia):
    at = log_in("admin", ADMIN_PASSWORD)
    for name, title in zip(ADMIN_PAGES, ("Users", "Teams", "Credits", "Analytics", "Models"), strict=True):
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, at.exception
        assert at.title[0].value == title
    member = log_in("mia", MEMBER_PASSWORD)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        member.switch_page("pages/admin/analytics.py")


def test_the_models_page_lists_the_workers_with_device_job_and_models(studio, studio_settings):
    from pipelines.cache import LoadedModel, MemoryReport  # the report's own shape (imports torch: only here)
    from studio.jobs.heartbeats import beat

    with session_for(studio_settings.database_url) as session:
        beat(
            session=session,
            name="gpu-host:0",
            device="cuda:0",
            current_job_id=42,
            loaded_models=["preview (cuda:0, float16)"],
            started_at=utcnow(),
            memory=MemoryReport(
                device="cuda:0",
                budget_bytes=12 * 2**30,
                used_bytes=3 * 2**30,
                models=(
                    LoadedModel(
                        name="stabilityai/stable-diffusion-xl-base-1.0",
                        location="stabilityai/stable-diffusion-xl-base-1.0",
                        family="sdxl",
                        kind="StableDiffusionXLImg2ImgPipeline",
                        bytes=7 * 2**30,
                        device_bytes=3 * 2**30,
                        device="cuda:0",
                        dtype="float16",
                        offload="model",
                        offload_requested="model",
                        in_use=True,
                    ),
                ),
            ).to_dict(),
        )
    at = signed_in_page("admin/models", "admin")
    assert not at.exception, at.exception
    # The catalogue's models first (tests/studio/catalogue/test_visibility.py), then the LoRAs
    # (tests/studio/catalogue/test_registered_loras.py), the workers, their batches and the loaded models.
    catalogue, loras, table, batches, models = at.dataframe
    shipped = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
    assert len(catalogue.value) > 0 and list(loras.value["LoRA"]) == list(shipped.loras)
    assert batches.value.to_dict("records") == [
        {"worker": "gpu-host:0", "batch size": 0, "STUDIO_BATCH_MAX": None, "chosen by": "—", "jobs": "idle"}
    ]
    row = table.value.iloc[0]
    assert (row["worker"], row["status"], row["device"], row["current job"]) == ("gpu-host:0", "alive", "cuda:0", 42)
    assert row["loaded models"] == "preview (cuda:0, float16)"
    assert (row["model memory"], row["budget"]) == ("3.00 GiB (25 %)", "12.00 GiB")
    [model] = models.value.to_dict("records")
    assert (model["family"], model["size"], model["on the device"], model["offload"], model["in use"]) == (
        "sdxl",
        "7.00 GiB",
        "3.00 GiB",
        "model",
        True,
    )


def test_the_models_page_shows_the_jobs_each_live_worker_runs_in_one_loop(studio, studio_settings, mia):
    """The jobs come from the leases (ids, owners, style, model, step), the limit and its reason from the heartbeat;
    a silent worker's batch is not shown as running."""
    from studio.db.engine import write_session
    from studio.jobs.batching import claim_key
    from studio.jobs.heartbeats import STALE_AFTER_SECONDS, beat
    from studio.jobs.leases import claim_batch
    from tests.support import queue_job

    with write_session(studio_settings.database_url) as session:
        for owner in ("admin", "mia"):
            queue_job(session, studio_settings, username=owner, original_name="a.png")
    with write_session(studio_settings.database_url) as session:
        held = claim_batch(
            session=session,
            worker="gpu-host:0",
            batch_max=4,
            batch_key=claim_key(session=session, settings=studio_settings),
        )
        ids = [job.id for job in held]
    long_ago = utcnow() - timedelta(seconds=STALE_AFTER_SECONDS + 5)
    with session_for(studio_settings.database_url) as session:
        for name, seen in (("gpu-host:0", utcnow()), ("gpu-host:1", long_ago)):
            beat(
                session=session,
                name=name,
                device="cuda:0",
                current_job_id=ids[0],
                loaded_models=[],
                started_at=long_ago,
                batch_max=6,
                batch_basis="memory: 30.00 GiB free × 80% / 4.00 GiB per preview image",
                now=seen,
            )
    at = signed_in_page("admin/models", "admin")
    assert not at.exception, at.exception
    [batches] = [frame for frame in at.dataframe if "batch size" in frame.value.columns]
    [row] = batches.value.to_dict("records")
    assert row == {
        "worker": "gpu-host:0",
        "batch size": 2,
        "STUDIO_BATCH_MAX": 6,
        "chosen by": "memory: 30.00 GiB free × 80% / 4.00 GiB per preview image",
        "jobs": f"#{ids[0]} admin (own settings, preview, starting); #{ids[1]} mia (own settings, preview, starting)",
    }


def test_the_analytics_page_draws_every_chart_with_its_csv_and_follows_the_filters(studio, studio_settings):
    engine = get_engine(studio_settings.database_url)
    seed(
        engine=engine,
        settings=studio_settings,
        options=SeedOptions(users=25, teams=3, jobs=2000, days=20, end=utcnow()),
    )
    at = signed_in_page("admin/analytics", "admin")
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 7
    assert [b.label for b in at.get("download_button")] == ["Download CSV"] * 7
    assert texts(at.caption).count(PERCENTILE_NOTE) == 2  # under each duration chart: what its precision is
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Jobs"] == "2,000"
    with Session(engine) as session:
        jobs = session.exec(select(Job)).all()
        spent = sum(job.cost for job in jobs if job.status is JobStatus.complete)
        [team] = session.exec(select(Team).order_by(Team.id).limit(1)).all()
    assert metrics["Credits spent"] == f"{spent:,}"

    at.segmented_control(key="analytics.breakdown").set_value("user").run()
    assert not at.exception, at.exception
    assert '"Others"' in at.get("plotly_chart")[0].proto.spec  # 25 users: the ten biggest and the rest
    at.selectbox(key="analytics.team").set_value(team.id).run()
    team_jobs = sum(job.team_id == team.id for job in jobs)
    assert {m.label: m.value for m in at.metric}["Jobs"] == f"{team_jobs:,}"
    long_ago = utcnow().date() - timedelta(days=100)
    at.date_input(key="analytics.dates").set_value((long_ago, long_ago + timedelta(days=7))).run()
    assert "No jobs match these filters." in texts(at.info)


def test_an_admin_changes_a_role_and_resets_a_password_the_member_then_uses(studio, studio_settings, mia):
    at = signed_in_page("admin/users", "admin")
    at.selectbox(key="manage_user").set_value(mia.id).run()
    [role_form] = [form(at, "set_role")]
    role_form.selectbox[0].set_value(Role.admin)
    role_form.form_submit_button[0].click().run()
    assert "mia is now admin." in texts(at.success)
    at.button(key="reset_password").click().run()
    [shown] = [s for s in texts(at.success) if s.startswith("New password for mia")]
    temporary = shown.split("`")[1]
    assert audit_actions(studio_settings) == [AuditAction.user_role, AuditAction.user_password_reset]
    at.run()  # shown once: the next run no longer has it
    assert not any(temporary in s for s in texts(at.success))
    assert log_in("mia", temporary).title[0].value == "Transform"


def test_an_admin_cannot_demote_themselves_on_the_page(studio, studio_settings):
    at = signed_in_page("admin/users", "admin")
    [role_form] = [form(at, "set_role")]
    role_form.selectbox[0].set_value(Role.member)
    role_form.form_submit_button[0].click().run()
    assert any("own account" in e for e in texts(at.error))
    assert audit_actions(studio_settings) == []


def test_teams_with_a_budget_alert_admins_on_the_page_and_members_in_the_sidebar(studio, studio_settings, mia):
    at = signed_in_page("admin/teams", "admin")
    at.text_input[0].input("Design")
    at.number_input[0].set_value(10)
    at.slider[0].set_value(50)
    [create] = [b for b in at.get("form_submit_button") if b.label == "Create team"]
    create.click().run()
    assert "Created team Design." in texts(at.success)
    members = form(at, "set_members")
    members.multiselect[0].set_value([mia.id])
    members.form_submit_button[0].click().run()
    assert "1 member changed." in texts(at.success)
    with session_for(studio_settings.database_url) as session:
        team = session.exec(select(Team)).one()
        assert session.get(User, mia.id).team_id == team.id
        session.add(Job(model="m", user_id=mia.id, team_id=team.id, cost=6, status=JobStatus.complete))
        session.commit()
    at = signed_in_page("admin/teams", "admin")
    assert any("Team Design has spent 6 of its 10-credit budget" in w for w in texts(at.warning))
    member = log_in("mia", MEMBER_PASSWORD)
    assert any("Team Design has spent 6" in w for w in texts(member.sidebar.warning))
    assert audit_actions(studio_settings) == [AuditAction.team_create, AuditAction.user_team]


def test_credits_are_granted_with_a_reason_and_the_audit_log_shows_it(studio, studio_settings, mia):
    at = signed_in_page("admin/credits", "admin")
    at.selectbox(key="credit_user").set_value(mia.id).run()
    at.number_input[0].set_value(25)
    at.form_submit_button[0].click().run()
    assert any("Say why" in e for e in texts(at.error))  # the reason is mandatory
    at.number_input[0].set_value(25)
    at.text_area[0].input("launch bonus")
    at.form_submit_button[0].click().run()
    assert "Grant: +25 credits for mia." in texts(at.success)
    with session_for(studio_settings.database_url) as session:
        assert balance(session=session, account=Account(user_id=mia.id), now=utcnow()) == 35
    at.run()
    log = at.dataframe[0].value
    assert log["Action"].tolist() == ["credit_grant"]
    assert log["Target"].tolist() == ["user mia"] and "launch bonus" in log["Details"][0]
