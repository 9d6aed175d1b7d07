"""AppTest: the Batch page (Pro and Free), presets on Transform, and History's filters, Remix and Delete."""

from __future__ import annotations

from sqlmodel import select

from studio.accounts.users import get_user
from studio.db.engine import session_for, write_session
from studio.db.tables import Job, JobStatus, Plan, Preset
from studio.jobs.worker import Worker
from tests.support import ADMIN_PASSWORD, log_in, png_bytes, texts


def make_pro(settings) -> None:
    with write_session(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        admin.plan = Plan.pro_monthly
        session.add(admin)
        session.commit()


def jobs(settings) -> list[Job]:
    with session_for(settings.database_url) as session:
        return list(session.exec(select(Job).order_by(Job.id)).all())


def test_free_users_see_why_there_is_no_batch(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.switch_page("pages/batch.py").run()
    assert any("part of the Pro plans" in i for i in texts(at.info))
    assert not at.get("file_uploader")


def test_a_batch_from_the_page_with_a_saved_preset(studio, studio_settings):
    make_pro(studio_settings)
    at = log_in("admin", ADMIN_PASSWORD)

    # Save the Transform form as a preset first.
    at.file_uploader(key="transform.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png")).run()
    at.selectbox(key="transform.style").set_value("cartoon").run()
    at.text_area(key="transform.prompt").input("a sneaker")
    at.slider(key="transform.steps").set_value(4)
    at.text_input(key="transform.preset_name").input("Catalogue look").run()
    at.button(key="transform.preset_save").click().run()
    assert not at.error, texts(at.error)
    with session_for(studio_settings.database_url) as session:
        [preset] = session.exec(select(Preset)).all()
    assert preset.name == "Catalogue look" and preset.settings["style"] == "cartoon"

    at.switch_page("pages/batch.py").run()
    files = [("a.png", png_bytes(256, 256), "image/png"), ("b.png", png_bytes(256, 264), "image/png")]
    at.file_uploader(key="batch.files").set_value(files).run()
    assert any("2 image(s) ready" in c for c in texts(at.caption))
    at.selectbox(key="batch.preset").set_value(preset.id)
    at.button(key="batch.preset_apply").click().run()
    assert at.selectbox(key="batch.style").value == "cartoon" and at.slider(key="batch.steps").value == 4
    assert any("2 images · costs **4** credits" in c for c in texts(at.caption))
    at.button(key="batch_button").click().run()
    assert not at.error, texts(at.error)
    assert len({job.batch_id for job in jobs(studio_settings)}) == 1

    worker = Worker(studio_settings, name="test-worker")
    while worker.run_once() is not None:
        pass
    at.run()
    assert any("2 complete · 0 failed" in c for c in texts(at.caption))
    assert "Download all (ZIP)" in [b.label for b in at.get("download_button")]


def test_history_filters_remix_and_delete(studio, studio_settings):
    at = log_in("admin", ADMIN_PASSWORD)
    at.file_uploader(key="transform.source_upload").set_value(("shoe.png", png_bytes(256, 320), "image/png")).run()
    at.text_area(key="transform.prompt").input("a watercolor sneaker")
    at.slider(key="transform.strength").set_value(0.5)
    at.slider(key="transform.steps").set_value(4)
    at.run()
    at.button(key="transform_button").click().run()
    Worker(studio_settings, name="test-worker").run_once()
    [job] = jobs(studio_settings)
    assert job.status is JobStatus.complete

    at.switch_page("pages/history.py").run()
    assert any(f"**#{job.id}** · complete" in md for md in texts(at.markdown))
    at.text_input(key="history.text").input("no such prompt").run()
    assert any("No jobs match" in i for i in texts(at.info))
    at.text_input(key="history.text").input("watercolor").run()
    assert any(f"**#{job.id}**" in md for md in texts(at.markdown))

    at.button(key=f"remix-{job.id}").click().run()
    assert at.title[0].value == "Transform"
    assert at.text_area(key="transform.prompt").value == "a watercolor sneaker"
    assert at.slider(key="transform.strength").value == 0.5

    at.switch_page("pages/history.py").run()
    at.button(key=f"delete-{job.id}").click().run()
    assert not at.exception, at.exception
    [deleted] = jobs(studio_settings)
    assert deleted.deleted_at is not None and deleted.result_asset_id is None
