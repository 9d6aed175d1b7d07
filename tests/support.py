"""What the tests share by import (conftest.py holds the fixtures): test images, the accounts' passwords, and
driving the app with Streamlit's AppTest."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
ADMIN_PASSWORD = "admin-password-for-tests"  # the first admin of every test studio (conftest's `studio`)
MEMBER_PASSWORD = "member-password"
# An app run that transforms imports diffusers (~10 s on 2 cores) and loads the model.
TIMEOUT = 180


def gradient(width: int, height: int) -> Image.Image:
    """A deterministic RGB source with structure in both directions."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def png_bytes(width: int = 256, height: int = 256, color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A small test photo: a colour gradient, so img2img has structure to keep."""
    image = Image.new("RGB", (width, height), color)
    for x in range(width):
        for y in range(0, height, 4):
            image.putpixel((x, y), (x % 256, (y * 2) % 256, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    """A ZIP archive of `files` (name → bytes), as a batch upload."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def mask_png(size: tuple[int, int], box: tuple[int, int, int, int] | None, mode: str = "L") -> bytes:
    """A mask PNG of `size`: `box` white (repaint) on black; None: all black (an empty mask)."""
    mask = Image.new(mode, size, 0)
    if box is not None:
        ImageDraw.Draw(mask).rectangle(box, fill=255 if mode == "L" else (255, 255, 255))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def all_jobs(settings) -> list:
    """Every job of the studio, oldest first."""
    from sqlmodel import select

    from studio.db.engine import session_for
    from studio.db.tables import Job

    with session_for(settings.database_url) as session:
        return list(session.exec(select(Job).order_by(Job.id)).all())


def result_pixels(settings, job) -> np.ndarray:
    """A finished job's result, RGB."""
    from studio.db.engine import session_for
    from studio.db.tables import Asset
    from studio.media.storage import AssetStore

    with session_for(settings.database_url) as session:
        result = session.get(Asset, job.result_asset_id)
    return np.asarray(Image.open(AssetStore(settings.assets_dir).path(result.sha256)).convert("RGB"))


def reload_job(settings, job):
    """The job's row as the database holds it now."""
    from studio.db.engine import session_for
    from studio.db.tables import Job

    with session_for(settings.database_url) as session:
        return session.get(Job, job.id)


def job_ledger(settings, job) -> dict:
    """The job's credit entries summed by kind: {CreditKind.reserve: -2, CreditKind.refund: 2}."""
    from sqlmodel import select

    from studio.db.engine import session_for
    from studio.db.tables import CreditEntry

    with session_for(settings.database_url) as session:
        rows = session.exec(select(CreditEntry).where(CreditEntry.job_id == job.id)).all()
    totals: dict = {}
    for row in rows:
        totals[row.kind] = totals.get(row.kind, 0) + row.amount
    return totals


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def image_captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def log_in(username: str, password: str) -> AppTest:
    """The app after logging in through its form."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click().run()
    return at


def sign_in_as(at: AppTest, username: str) -> AppTest:
    """`at` with a new session of `username` in its session state, as signing in leaves it (the login form is
    tested elsewhere)."""
    from studio.accounts.sessions import Client, SessionPolicy, open_session
    from studio.accounts.users import get_user
    from studio.config import get_settings
    from studio.db.engine import write_session
    from studio.db.tables import utcnow
    from studio.web.auth import SESSION_TOKEN_STATE

    settings = get_settings()
    with write_session(settings.database_url) as session:
        user = get_user(session=session, username=username)
        policy = SessionPolicy.from_settings(settings)
        token = open_session(session=session, user=user, client=Client(address=None), now=utcnow(), policy=policy)
        session.commit()
    at.session_state[SESSION_TOKEN_STATE] = token
    return at


def signed_in_page(name: str, username: str) -> AppTest:
    """One page file (`pages/<name>.py`) run on its own as a signed-in user."""
    return sign_in_as(AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT), username).run()


def queue_job(session, settings, *, username: str = "admin", prompt: str = "a watercolor", original_name: str):
    """A job queued through `studio.jobs.submit.submit_job` (a small PNG, the configured model, own settings)."""
    from pipelines.params import Img2ImgParams
    from studio.accounts.users import get_user
    from studio.catalogue.requests import custom_request
    from studio.jobs.submit import submit_job
    from studio.media.storage import AssetStore
    from studio.media.validation import validate_image_bytes

    params = Img2ImgParams(prompt=prompt, strength=0.5, steps=4, guidance=7.5, seed=1)
    return submit_job(
        session=session,
        store=AssetStore(settings.assets_dir),
        settings=settings,
        user=get_user(session=session, username=username),
        upload=validate_image_bytes(png_bytes()),
        original_name=original_name,
        request=custom_request(settings=settings, params=params),
    )


def finish_jobs(settings, *, worker: str = "test-worker") -> list:
    """Run the queue dry with one worker; every job, oldest first."""
    from sqlmodel import select

    from studio.db.engine import session_for
    from studio.db.tables import Job
    from studio.jobs.worker import Worker

    runner = Worker(settings, name=worker)
    while runner.run_once() is not None:
        pass
    with session_for(settings.database_url) as session:
        return list(session.exec(select(Job).order_by(Job.id)).all())
