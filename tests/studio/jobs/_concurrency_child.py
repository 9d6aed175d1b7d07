"""The body of a child process in tests/test_concurrency.py (a module, so "spawn" can import it).

It reads its settings from the environment dict it is given, like a separate worker or web
process would, and submits jobs against the shared SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.params import Img2ImgParams
from studio.billing.pricing import Quality
from studio.catalogue.requests import custom_request
from studio.config import Settings, load_settings
from studio.db.engine import write_session
from studio.db.tables import User
from studio.errors import Refused
from studio.jobs.submit import submit_job
from studio.media.storage import AssetStore
from studio.media.validation import ValidatedImage, validate_image_bytes

PARAMS = Img2ImgParams(prompt="a watercolor shoe", strength=0.5, steps=4)


def submit(settings: Settings, store: AssetStore, user_id: int, upload: ValidatedImage) -> int:
    with write_session(settings.database_url) as session:
        user = session.get(User, user_id)
        job = submit_job(
            session=session,
            store=store,
            settings=settings,
            user=user,
            upload=upload,
            original_name="shoe.png",
            request=custom_request(settings=settings, params=PARAMS, quality=Quality.standard),
        )
    return job.id


def submit_many(
    env: dict[str, str],
    secrets_path: str,
    user_id: int,
    broke_user_id: int,
    attempts: int,
    png: bytes,
    ready,
    start,
    results,
) -> None:
    """Submit `attempts` jobs for `user_id` once `start` is set; put what happened on `results`.

    First one submit for `broke_user_id` (no credits: refused, leaving nothing behind) warms up
    the connection and SQLAlchemy's statement caches, so all children race from the same mark.
    """
    settings = load_settings(env, secrets_path=Path(secrets_path))
    store = AssetStore(settings.assets_dir)
    upload = validate_image_bytes(png)
    outcome = {"pid": os.getpid(), "database_url": settings.database_url, "ok": [], "refused": [], "errors": []}
    try:
        submit(settings, store, broke_user_id, upload)
        outcome["errors"].append("the warm-up submit for a user without credits was accepted")
    except Refused:
        pass
    ready.put(os.getpid())
    if not start.wait(60):
        outcome["errors"].append("never told to start")
        results.put(outcome)
        return
    for _ in range(attempts):
        try:
            outcome["ok"].append(submit(settings, store, user_id, upload))
        except Refused as exc:
            outcome["refused"].append(str(exc))
        except Exception as exc:  # reported to the parent, which fails the test with it
            outcome["errors"].append(f"{type(exc).__name__}: {exc}")
    results.put(outcome)
