"""History pages (filters, keyset pagination, team view, delete) and retention, with a fake clock."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import func, select

from studio.accounts.users import create_user, get_user
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, Job, JobStatus, Team, utcnow
from studio.jobs.history import OWN_SETTINGS, HistoryFilter, history_page
from studio.jobs.retention import delete_job, purge_expired
from studio.media.storage import AssetStore, sha256_hex

NOW = utcnow().replace(microsecond=0)
# History's JSON text filter and row-value keyset differ by dialect: run on both databases.
pytestmark = pytest.mark.both_databases


@pytest.fixture
def env(studio, studio_settings):
    url = studio_settings.database_url
    with write_session(url) as session:
        team = Team(name="Design")
        session.add(team)
        session.commit()
        admin = get_user(session=session, username="admin")
        admin.team_id = team.id
        session.add(admin)
        session.commit()
        member = create_user(session=session, username="maya", password="password-1", email="m@x.io", team_id=team.id)
        session.refresh(admin)
    return {"url": url, "store": AssetStore(studio_settings.assets_dir), "admin": admin, "member": member}


def add_job(env, user, *, age_days=0.0, status=JobStatus.complete, style=None, prompt="a shoe", image=b"img"):
    """A finished job with a stored source and result (files too), created `age_days` ago."""
    created = NOW - timedelta(days=age_days)
    with write_session(env["url"]) as session:
        assets = []
        kinds = [(AssetKind.source, image + b"-src")]
        if status is JobStatus.complete:
            kinds.append((AssetKind.result, image + b"-res"))
        for kind, data in kinds:
            env["store"].put(data)
            asset = Asset(
                user_id=user.id,
                kind=kind,
                sha256=sha256_hex(data),
                width=8,
                height=8,
                size_bytes=len(data),
                original_name="a.png",
                created_at=created,
            )
            session.add(asset)
            assets.append(asset)
        session.flush()
        job = Job(
            model="preview",
            style=style,
            params={"prompt": prompt, "user_prompt": prompt, "strength": 0.5, "steps": 4, "seed": 1},
            user_id=user.id,
            team_id=user.team_id,
            status=status,
            source_asset_id=assets[0].id,
            result_asset_id=assets[1].id if len(assets) > 1 else None,
            cost=1,
            created_at=created,
        )
        session.add(job)
        session.commit()
        session.refresh(job)
        return job


def all_pages(env, viewer, filters: HistoryFilter | None = None, limit=7) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        with session_for(env["url"]) as session:
            page = history_page(
                session=session, viewer=viewer, filters=filters or HistoryFilter(), after=cursor, limit=limit
            )
        pages.append([row.job.id for row in page.rows])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_keyset_pages_cover_every_job_once_newest_first(env):
    ids = [add_job(env, env["member"], age_days=day / 10, image=str(day).encode()).id for day in range(30)]
    # Two jobs in the same second: the id breaks the tie.
    ids += [add_job(env, env["member"], age_days=0, image=b"twin").id]
    pages = all_pages(env, env["member"])
    assert [len(page) for page in pages] == [7, 7, 7, 7, 3]
    flat = [job_id for page in pages for job_id in page]
    assert sorted(flat) == sorted(ids) and len(set(flat)) == len(flat)
    assert flat[:2] == [ids[-1], ids[0]]  # the newest first; same time: higher id first


def test_filters(env):
    member = env["member"]
    shoe = add_job(env, member, style="anime", prompt="red Sneaker on sand", image=b"1")
    old = add_job(env, member, age_days=10, prompt="a bag", image=b"2")
    failed = add_job(env, member, status=JobStatus.failed, prompt="a hat", image=b"3")

    def ids(**kwargs):
        return [job_id for page in all_pages(env, member, HistoryFilter(**kwargs)) for job_id in page]

    assert ids(text="sneaker") == [shoe.id]
    assert ids(style="anime") == [shoe.id]
    assert ids(style=OWN_SETTINGS) == [failed.id, old.id]
    assert ids(statuses=(JobStatus.failed,)) == [failed.id]
    assert ids(since=date.today() - timedelta(days=11), until=date.today() - timedelta(days=9)) == [old.id]


def test_an_admin_sees_the_team_a_member_only_their_own(env):
    mine = add_job(env, env["member"], image=b"m")
    theirs = add_job(env, env["admin"], image=b"a")
    assert all_pages(env, env["member"]) == [[mine.id]]
    assert all_pages(env, env["admin"], HistoryFilter(team=True)) == [[theirs.id, mine.id]]
    with pytest.raises(PermissionError):
        all_pages(env, env["member"], HistoryFilter(team=True))


def test_deleting_a_job_removes_its_images_but_keeps_the_record(env):
    job = add_job(env, env["member"], image=b"gone")
    with session_for(env["url"]) as session:
        hashes = [session.get(Asset, i).sha256 for i in (job.source_asset_id, job.result_asset_id)]
    with write_session(env["url"]) as session:
        with pytest.raises(LookupError):
            delete_job(
                session=session,
                store=env["store"],
                user=create_user(session=session, username="stranger", password="password-9", email="s@x.io"),
                job_id=job.id,
            )
        deleted = delete_job(session=session, store=env["store"], user=env["member"], job_id=job.id)
    assert deleted.deleted_at is not None and deleted.source_asset_id is None and deleted.result_asset_id is None
    assert not any(env["store"].exists(h) for h in hashes)
    assert all_pages(env, env["member"]) == [[]]
    with session_for(env["url"]) as session:
        assert session.get(Job, job.id) is not None  # the row stays for accounting


def test_a_running_job_cannot_be_deleted(env):
    job = add_job(env, env["member"], status=JobStatus.processing, image=b"busy")
    with write_session(env["url"]) as session, pytest.raises(ValueError, match="still processing"):
        delete_job(session=session, store=env["store"], user=env["member"], job_id=job.id)


def test_retention_keeps_the_reference_images_a_queued_edit_names_until_it_ends(env):
    edit = add_job(env, env["member"], age_days=40, status=JobStatus.queued, image=b"edit")
    reference = b"reference-png"
    env["store"].put(reference)
    with write_session(env["url"]) as session:
        session.add(
            Asset(
                user_id=env["member"].id,
                kind=AssetKind.source,
                sha256=sha256_hex(reference),
                width=8,
                height=8,
                size_bytes=len(reference),
                original_name="reference 1",
                created_at=NOW - timedelta(days=40),
            )
        )
        job = session.get(Job, edit.id)
        job.params = {**job.params, "references": [sha256_hex(reference)]}
        session.add(job)
        session.commit()

    with write_session(env["url"]) as session:
        assert purge_expired(session=session, store=env["store"], days=30, now=NOW).assets == 0
    assert env["store"].exists(sha256_hex(reference))  # the worker will read it
    with write_session(env["url"]) as session:
        session.get(Job, edit.id).status = JobStatus.complete
        session.commit()
    with write_session(env["url"]) as session:
        assert purge_expired(session=session, store=env["store"], days=30, now=NOW).assets == 2  # source, reference
    assert not env["store"].exists(sha256_hex(reference))


def test_retention_deletes_old_images_and_keeps_jobs_ledger_and_running_work(env):
    old = add_job(env, env["member"], age_days=31, image=b"old")
    recent = add_job(env, env["member"], age_days=29, image=b"new")
    running = add_job(env, env["member"], age_days=40, status=JobStatus.queued, image=b"run")
    with session_for(env["url"]) as session:
        ledger_rows = session.exec(select(func.count()).select_from(CreditEntry)).one()
        old_hashes = [session.get(Asset, i).sha256 for i in (old.source_asset_id, old.result_asset_id)]

    with write_session(env["url"]) as session:
        purged = purge_expired(session=session, store=env["store"], days=30, now=NOW)
    assert (purged.assets, purged.files) == (2, 2)
    with session_for(env["url"]) as session:
        old_now, recent_now = session.get(Job, old.id), session.get(Job, recent.id)
        assert old_now.source_asset_id is None and old_now.result_asset_id is None and old_now.cost == 1
        assert recent_now.source_asset_id is not None
        assert session.get(Job, running.id).source_asset_id is not None  # still queued: kept
        assert session.exec(select(func.count()).select_from(CreditEntry)).one() == ledger_rows
    assert not any(env["store"].exists(h) for h in old_hashes)

    with write_session(env["url"]) as session:  # idempotent, and 0 days keeps everything
        assert purge_expired(session=session, store=env["store"], days=30, now=NOW).assets == 0
        assert purge_expired(session=session, store=env["store"], days=0, now=NOW + timedelta(days=999)).assets == 0
    # A year later the recent one goes too (and the queued one still stays while queued).
    with write_session(env["url"]) as session:
        assert purge_expired(session=session, store=env["store"], days=30, now=NOW + timedelta(days=365)).assets == 2
