"""What the tests share by import (conftest.py holds the fixtures): test images, the accounts' passwords, and
driving the app with Streamlit's AppTest."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
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


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def log_in(username: str, password: str) -> AppTest:
    """The app after logging in through its form."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click().run()
    return at


def signed_in_page(name: str, username: str) -> AppTest:
    """One page file (`pages/<name>.py`) run on its own as a signed-in user (the login is tested elsewhere)."""
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    at.session_state["authentication_status"] = True
    at.session_state["username"] = username
    return at.run()
