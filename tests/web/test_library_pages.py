"""One image library across the pages (AppTest): the source picker on every page that takes a source, the source
following the user from page to page, *Open in* on every result, and the admin's getting-started panel."""

from __future__ import annotations

import pytest
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from studio.accounts.users import create_user, get_user
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, Job, JobStatus, Team
from studio.jobs.worker import Worker
from studio.web.library import DESTINATIONS
from tests.support import (
    ADMIN_PASSWORD,
    APP,
    TIMEOUT,
    image_captions,
    log_in,
    png_bytes,
    queue_job,
    sign_in_as,
    signed_in_page,
    texts,
)

SHOE = ("shoe.png", png_bytes(256, 320), "image/png")
PICKER_PAGES = [d.page.removeprefix("pages/").removesuffix(".py") for d in DESTINATIONS if d.label != "Compare"]


def current_source(at, settings, username: str = "admin"):
    with session_for(settings.database_url) as session:
        user_id = get_user(session=session, username=username).id
    return at.session_state[f"library.current.{user_id}"]


@pytest.mark.parametrize("page", PICKER_PAGES)
def test_every_page_that_takes_a_source_offers_upload_and_the_library(studio, page):
    at = signed_in_page(page, "admin")
    assert not at.exception, at.exception
    assert [tab.label for tab in at.tabs][:2] == ["Upload", "Library"]
    assert at.file_uploader(key=f"{page}.source_upload") is not None
    assert at.text_input(key=f"{page}.library_search") is not None
    assert "Your uploads and results will be here." in texts(at.caption)


def test_a_source_uploaded_on_transform_follows_to_inpaint_and_sweep(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(SHOE).run()
    assert "shoe.png · 256×320" in image_captions(at)

    at.switch_page("pages/inpaint.py").run()
    assert not at.exception, at.exception
    assert at.file_uploader(key="inpaint.source_upload").value is None  # nothing uploaded here…
    assert at.toggle(key="inpaint.soft") is not None  # …yet the mask editor has its source
    at.switch_page("pages/sweep.py").run()
    assert "shoe.png · 256×320" in image_captions(at)
    assert current_source(at, studio_settings).name == "shoe.png"


def test_a_refused_upload_says_why_and_keeps_the_source(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(SHOE).run()
    at.file_uploader(key="transform.source_upload").set_value(("photo.png", b"<svg/>", "image/png")).run()
    assert at.error and "not" in at.error[0].value.lower()
    assert "shoe.png · 256×320" in image_captions(at)
    with session_for(studio_settings.database_url) as session:
        assert session.exec(select(Asset)).all() == []  # nothing stored by choosing or refusing a source


def test_open_in_sends_a_result_to_inpaint_sweep_and_compare(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(SHOE).run()
    at.text_area(key="transform.prompt").input("a watercolor sneaker")
    at.slider(key="transform.steps").set_value(4)
    at.run()
    at.button(key="transform_button").click().run()
    Worker(studio_settings, name="test-worker").run_once()
    at.run()
    with session_for(studio_settings.database_url) as session:
        [job] = session.exec(select(Job)).all()

    at.button(key=f"job-{job.id}.open_in.Inpaint").click().run()  # from the job panel
    assert not at.exception, at.exception
    assert at.title[0].value == "Inpaint"
    assert current_source(at, studio_settings).job_id == job.id

    at.switch_page("pages/history.py").run()
    at.button(key=f"history-{job.id}.open_in.Sweep").click().run()  # from a History card
    assert at.title[0].value == "Strength sweep"
    assert f"img2img-{job.id}.png · 256×320" in image_captions(at)

    at.switch_page("pages/history.py").run()
    at.button(key=f"history-{job.id}.open_in.Compare").click().run()
    assert at.title[0].value == "Compare"
    assert at.selectbox(key="compare.first").value == job.id
    assert len(at.image) >= 2  # the source and this result side by side


def test_the_library_tab_picks_searches_and_shows_only_the_users_own_images(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        queue_job(session, studio_settings, prompt="a bag", original_name="bag.png")
        create_user(session=session, username="mia", password="mia-password", email="mia@example.com")
        queue_job(session, studio_settings, username="mia", prompt="secret", original_name="secret.png")
        [bag, secret] = session.exec(select(Asset).where(Asset.kind == AssetKind.source).order_by(Asset.id)).all()

    at = signed_in_page("inpaint", "admin")
    assert "bag.png" in texts(at.caption) and "secret.png" not in texts(at.caption)
    assert not [b for b in at.button if b.key == f"inpaint.use_asset.{secret.id}"]
    at.button(key=f"inpaint.use_asset.{bag.id}").click().run()
    assert not at.exception, at.exception
    assert at.toggle(key="inpaint.soft") is not None  # the mask editor: the page has its source
    assert current_source(at, studio_settings).name == "bag.png"
    at.text_input(key="inpaint.library_search").input("no such image").run()
    assert "No image matches." in texts(at.caption)

    at = signed_in_page("transform", "mia")
    for search in ("", "bag"):
        at.text_input(key="transform.library_search").input(search).run()
        assert "bag.png" not in texts(at.caption)
    assert not [b for b in at.button if b.key == f"transform.use_asset.{bag.id}"]


def test_an_admin_sees_getting_started_until_closing_it_and_a_member_never(studio, studio_settings):
    def shows_panel(at) -> bool:
        return any("Getting started" in m for m in texts(at.markdown))

    at = sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()  # the app shows it
    assert shows_panel(at)
    assert {link.proto.page for link in at.get("page_link")} == {"admin_teams", "admin_users", "admin_credits"}

    at.button(key="getting_started.dismiss").click().run()
    with session_for(studio_settings.database_url) as session:
        assert get_user(session=session, username="admin").getting_started_dismissed
    assert not shows_panel(sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run())

    with write_session(studio_settings.database_url) as session:
        create_user(session=session, username="mia", password="mia-password", email="mia@example.com")
    at = sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "mia").run()
    assert at.title[0].value == "Transform" and not shows_panel(at)


def test_an_admin_viewing_the_teams_history_gets_open_in_only_on_their_own_results(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        team = Team(name="Design")
        session.add(team)
        session.flush()
        create_user(session=session, username="mia", password="mia-password", email="m@x.org", team_id=team.id)
        admin = get_user(session=session, username="admin")
        admin.team_id = team.id
        session.add(admin)
        session.commit()
        jobs = [
            queue_job(session, studio_settings, username=name, prompt="a bag", original_name=f"{name}.png")
            for name in ("admin", "mia")
        ]
        for job in jobs:  # finished, with a result, as a worker leaves them
            source = session.get(Asset, job.source_asset_id)
            result = Asset(
                user_id=job.user_id, kind=AssetKind.result, sha256=source.sha256, width=256, height=256, size_bytes=1
            )
            session.add(result)
            session.flush()
            job.result_asset_id, job.status = result.id, JobStatus.complete
            session.add(job)
        session.commit()

    at = signed_in_page("history", "admin")
    at.toggle(key="history.team").set_value(True).run()
    keys = {button.key for button in at.button}
    assert f"history-{jobs[0].id}.open_in.Inpaint" in keys
    assert not any(key.startswith(f"history-{jobs[1].id}.open_in") for key in keys)
