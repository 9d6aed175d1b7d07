"""Small widgets several pages share: the preview-model notice, strength hints, thumbnails, validated uploads."""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from studio.config import Settings
from studio.media.storage import AssetStore
from studio.media.validation import ValidatedImage, validate_image_bytes

THUMBNAIL_SIDE = 256


def model_notice(config: Settings) -> None:
    if config.uses_preview_model:
        st.info(
            "**Preview model.** This studio runs a tiny, randomly initialised diffusion model that it "
            "built itself: it proves the whole pipeline works offline, but it makes no art — results "
            "look like coloured noise. To make real images, point the studio at a real checkpoint: set "
            "`STUDIO_MODEL` (or `model` under `[studio]` in `.streamlit/secrets.toml`) to a Hugging Face "
            "id such as `stable-diffusion-v1-5/stable-diffusion-v1-5` or to a local diffusers folder, "
            "then restart. See README → Real models.",
            icon=":material/science:",
        )


STRENGTH_HELP = (
    "How far the result may move away from the source. 0.2–0.3: subtle touch-up, "
    "0.4–0.6: restyle while keeping the composition, 0.7–0.9: heavy reimagining, 1.0: ignore the source."
)


def strength_hint(strength: float) -> str:
    if strength < 0.2:
        return "Barely changes the source."
    if strength < 0.4:
        return "Subtle: keeps the photo, nudges colours and texture."
    if strength < 0.7:
        return "Restyle: new look, same composition."
    if strength < 0.95:
        return "Heavy: the prompt dominates, the layout is a loose guide."
    return "Full: the source barely matters."


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(sha256: str, _store_root: str) -> bytes:
    """A small JPEG of a stored image (cached by content hash, which never changes)."""
    with Image.open(AssetStore(_store_root).path(sha256)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@st.cache_data(max_entries=8, show_spinner=False)
def validated_upload(data: bytes) -> ValidatedImage:
    """Validate uploaded bytes once per distinct file (reruns reuse the result; rejections re-raise)."""
    return validate_image_bytes(data)
