"""The studio as a user drives it, through Streamlit's AppTest: login → transform → history.

Nothing on the diffusers path is patched: the Transform page runs the tiny preview model.
"""

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from studio.accounts.users import create_user
from studio.db.engine import session_for
from studio.db.tables import Asset, Job, JobStatus
from studio.jobs.worker import Worker
from tests.support import ADMIN_PASSWORD, APP, MEMBER_PASSWORD, TIMEOUT, log_in, png_bytes, signed_in_page, texts


@pytest.fixture
def member(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        create_user(session=session, username="mia", password=MEMBER_PASSWORD, email="mia@example.com")


def test_wrong_password_is_refused_with_a_message(studio):
    at = log_in("admin", "not-the-password")
    assert "Username or password is incorrect." in texts(at.error)
    assert not at.title or at.title[0].value == "Img2Img Studio"


def test_a_bad_cookie_key_stops_the_app_with_how_to_fix_it(studio_settings, monkeypatch):
    from studio.config import get_settings

    monkeypatch.setenv("STUDIO_COOKIE_KEY", "too-short")
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert any("cannot start" in e and "32" in e for e in texts(at.error))


def test_login_transform_and_history(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    assert not at.exception
    assert at.title[0].value == "Transform"
    assert any("Preview model" in info for info in texts(at.info))

    at.file_uploader(key="transform.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png"))
    at.run()
    assert not at.error
    at.text_area(key="transform.prompt").input("a watercolor sneaker")
    at.slider(key="transform.strength").set_value(0.5)
    at.slider(key="transform.steps").set_value(4)
    at.number_input(key="transform.seed").set_value(1234)
    at.run()
    assert any("Costs **1** credit" in c and "you have 10" in c for c in texts(at.caption))
    at.button(key="transform_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert any("queued · position 1 · 1 credits reserved" in i for i in texts(at.info))

    # A second click on the same inputs is the same job: no second charge.
    at.button(key="transform_button").click().run()
    with session_for(studio_settings.database_url) as session:
        assert len(session.exec(select(Job)).all()) == 1

    Worker(studio_settings, name="test-worker").run_once()
    at.run()
    with session_for(studio_settings.database_url) as session:
        [job] = session.exec(select(Job)).all()
        assert job.status is JobStatus.complete
        assert job.params["seed"] == 1234 and job.params["strength"] == 0.5 and job.params["steps"] == 4
        result = session.get(Asset, job.result_asset_id)
    assert (result.width, result.height) == (256, 320)
    assert len(at.image) >= 2  # the source and the result side by side
    assert [b.label for b in at.get("download_button")] == ["Download PNG"]

    at.switch_page("pages/history.py").run()
    assert at.title[0].value == "History"
    assert any(f"**#{job.id}** · complete" in md for md in texts(at.markdown))

    at.switch_page("pages/account.py").run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric][:1] == ["9"]
    ledger = at.dataframe[1].value
    assert ledger["What"].tolist()[:2] == ["commit", "reserve"]
    assert ledger["Credits"].tolist()[:3] == [0, -1, 10]


def test_not_enough_credits_is_a_clear_message_and_queues_nothing(studio, studio_settings):
    from studio.accounts.users import get_user
    from studio.billing.credits import Account, adjust
    from studio.db.engine import write_session
    from studio.db.tables import utcnow

    with write_session(studio_settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        adjust(
            session=session,
            account=Account(user_id=admin.id),
            amount=-10,
            reason="test",
            actor_id=admin.id,
            now=utcnow(),
        )
        session.commit()
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png"))
    at.run()
    at.text_area(key="transform.prompt").input("a watercolor sneaker")
    at.button(key="transform_button").click().run()
    assert any("this job costs 1, your balance is 0" in e for e in texts(at.error))
    with session_for(studio_settings.database_url) as session:
        assert session.exec(select(Job)).all() == []


def test_an_invalid_upload_shows_why_and_stores_nothing(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(("photo.png", b"<svg xmlns='x'></svg>", "image/png"))
    at.run()
    assert any("SVG" in e for e in texts(at.error))
    assert at.button(key="transform_button").disabled
    with session_for(studio_settings.database_url) as session:
        assert session.exec(select(Asset)).all() == []
    assert not studio_settings.assets_dir.exists() or not any(studio_settings.assets_dir.rglob("*"))


def test_admins_see_admin_pages_and_members_do_not(studio, member):
    admin = log_in("admin", ADMIN_PASSWORD)
    admin.switch_page("pages/admin/users.py").run()
    assert admin.title[0].value == "Users"

    at = log_in("mia", MEMBER_PASSWORD)
    assert at.title[0].value == "Transform"
    assert "Admin" not in str(at.sidebar)
    # The member's navigation does not register the page at all (a URL to it falls back to Transform).
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/admin/users.py")


def test_the_admin_page_checks_the_role_itself(studio, member):
    at = signed_in_page("admin/users", "mia")
    assert "This page is for administrators only." in texts(at.error)
    assert not at.dataframe


def test_an_admin_creates_a_member_who_can_log_in(studio):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/admin/users.py").run()
    at.text_input[0].input("noah")
    at.text_input[1].input("Noah")
    at.text_input[2].input("noah@example.com")
    at.text_input[3].input("noah-password")
    [create] = [b for b in at.button if b.label == "Create user"]
    create.click().run()
    assert "Created noah (member)." in texts(at.success)
    assert log_in("noah", "noah-password").title[0].value == "Transform"


def test_transform_shows_a_finished_job_whose_images_were_deleted(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png"))
    at.run()
    at.text_area(key="transform.prompt").input("a watercolor sneaker")
    at.slider(key="transform.steps").set_value(4)
    at.button(key="transform_button").click().run()
    Worker(studio_settings, name="test-worker").run_once()
    at.switch_page("pages/history.py").run()
    with session_for(studio_settings.database_url) as session:
        [job] = session.exec(select(Job)).all()
    at.button(key=f"delete-{job.id}").click().run()
    at.switch_page("pages/transform.py").run()
    assert not at.exception, at.exception
    assert any("its images have since been deleted" in i for i in texts(at.info))


def test_a_history_card_says_the_denoising_steps_that_ran(studio, studio_settings):
    from studio.web.jobs import job_summary

    job = Job(model="preview", params={"prompt": "x", "strength": 0.65, "steps": 20, "seed": 3}, user_id=1)
    assert "13 of 20 steps" in job_summary(job)  # int(20 × 0.65) = 13 ran
    job.recipe = {"denoising_steps": 12}  # once finished, what its recipe says ran
    assert "12 of 20 steps" in job_summary(job)
    upscale = Job(model="preview-upscaler-x4", params={"task": "upscale_4x", "prompt": "", "steps": 20}, user_id=1)
    assert "20 steps" in job_summary(upscale) and "strength" not in job_summary(upscale)
