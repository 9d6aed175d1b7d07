"""The image library's queries: a user's own uploads and results only, each image once, newest first, searchable."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from studio.accounts.users import create_user, get_user
from studio.db.engine import write_session
from studio.db.tables import Asset, AssetKind, Job
from studio.media.library import library_items, user_result_item
from tests.support import queue_job

pytestmark = pytest.mark.both_databases  # the search is SQL: JSON paths and LIKE escapes differ by dialect


def _finish_with_result(session: Session, job: Job, sha256: str) -> Asset:
    """Give `job` a result asset, as a worker does."""
    result = Asset(user_id=job.user_id, kind=AssetKind.result, sha256=sha256, width=256, height=256, size_bytes=1)
    session.add(result)
    session.flush()
    job.result_asset_id = result.id
    session.add(job)
    session.commit()
    return result


def _labels(session: Session, user_id: int, search: str = "") -> list[str]:
    return [item.label for item in library_items(session=session, user_id=user_id, search=search)]


def test_the_library_lists_a_users_uploads_and_results_newest_first_each_image_once(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        first = queue_job(session, studio_settings, prompt="a red sneaker", original_name="shoe.png")
        queue_job(session, studio_settings, prompt="a blue sneaker", original_name="shoe-again.png")  # same bytes
        _finish_with_result(session, first, "ab" * 32)
        admin = get_user(session=session, username="admin")
        labels = _labels(session, admin.id)
    # The second upload is the same file as the first: one item, the newest name. The result is newer still.
    assert labels == [f"result #{first.id} · own settings · a red sneaker", "shoe-again.png"]


def test_search_matches_file_names_prompts_and_styles_and_takes_wildcards_literally(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        job = queue_job(session, studio_settings, prompt="a watercolor bag", original_name="bag_50%.png")
        _finish_with_result(session, job, "cd" * 32)
        user_id = get_user(session=session, username="admin").id
        assert _labels(session, user_id, "BAG_50") == ["bag_50%.png"]  # case-insensitive, "_" is a character
        assert _labels(session, user_id, "watercolor") == [f"result #{job.id} · own settings · a watercolor bag"]
        assert _labels(session, user_id, "%") == ["bag_50%.png"]  # not "everything"
        assert _labels(session, user_id, "no such thing") == []


def test_nobody_sees_another_users_images_whatever_they_search(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        job = queue_job(session, studio_settings, prompt="secret campaign", original_name="secret.png")
        _finish_with_result(session, job, "ef" * 32)
        mia = create_user(session=session, username="mia", password="mia-password", email="mia@example.com")
        for search in ("", "secret", "campaign", "png", "%"):
            assert library_items(session=session, user_id=mia.id, search=search) == []
        # A result is reachable by its job only for its owner.
        assert user_result_item(session=session, user_id=mia.id, job_id=job.id) is None
        admin = get_user(session=session, username="admin")
        assert user_result_item(session=session, user_id=admin.id, job_id=job.id).job.id == job.id
        assert user_result_item(session=session, user_id=admin.id, job_id=job.id + 99) is None
