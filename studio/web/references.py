"""The *Reference image* expander of Transform and Inpaint: an image the run follows through the catalogue's
IP-Adapter of the style's family (upload one, or pick one from the image library) and how strongly (a scale slider
from pipelines.params.LIMITS). Shown for every style; a family without an IP-Adapter says so and takes none."""

from __future__ import annotations

import streamlit as st

from pipelines.families import FAMILIES
from pipelines.params import IP_ADAPTER_SCALE_STEP, LIMITS
from studio.catalogue.references import ReferenceImage
from studio.catalogue.requests import configured_family
from studio.catalogue.styles import Catalogue, Style
from studio.config import Settings
from studio.db.tables import User
from studio.media.library import library_items
from studio.media.storage import sha256_hex
from studio.media.validation import ValidatedImage
from studio.web import app, refusals, widgets
from studio.web.library import new_upload
from studio.web.text import plain

DEFAULT_SCALE = 0.6  # IP-Adapter's authors suggest ~0.5 with a text prompt; 1.0 follows the image only
LIBRARY_CHOICES = 12  # the newest uploads and results offered (search finds older ones)
THUMBNAIL_WIDTH = 160


def reference_settings(
    prefix: str, catalogue: Catalogue, config: Settings, style: Style | None, user: User
) -> tuple[ValidatedImage | None, ReferenceImage | None]:
    """The reference image chosen on this page (validated as uploads are) and the ReferenceImage a request names it
    by, at the slider's scale; (None, None) without one or for a family without an IP-Adapter."""
    family = style.family if style is not None else configured_family(config)
    image_key = f"{prefix}.reference_image"
    with st.expander("Reference image"):
        adapter = catalogue.ip_adapter_for(family)
        if adapter is None:
            st.caption(f"{FAMILIES[family].label} models take no reference image in this studio.")
            return None, None
        st.caption(
            "The result follows this image's look and colours (an IP-Adapter reads it); the prompt still steers. "
            + (adapter.about or "")
        )
        upload_tab, library_tab = st.tabs(["Upload", "Library"])
        with upload_tab:
            _upload(prefix, image_key)
        with library_tab:
            _library(prefix, image_key, user)
        image: ValidatedImage | None = st.session_state.get(image_key)
        if image is None:
            return None, None
        st.image(image.image, caption=f"Reference · {image.width}×{image.height}", width=THUMBNAIL_WIDTH)
        scale_key = f"{prefix}.reference_scale"
        st.session_state.setdefault(scale_key, DEFAULT_SCALE)  # through the state: recipes set it too
        low, high = LIMITS["ip_adapter_scale"]
        scale = st.slider(
            "Reference strength",
            min_value=low,
            max_value=high,
            step=IP_ADAPTER_SCALE_STEP,
            help="0: the reference is ignored; 1: the result follows it strongly; above 1 it overrides the prompt.",
            key=scale_key,
        )
        if st.button("Remove the reference image", key=f"{prefix}.reference_remove"):
            del st.session_state[image_key]
            st.rerun()
        return image, ReferenceImage(sha256_hex(image.png_bytes), float(scale))


def _upload(prefix: str, image_key: str) -> None:
    """A newly uploaded file becomes the reference; one that is refused is explained and changes nothing."""
    if (new := new_upload("Reference image", key=f"{prefix}.reference_upload")) is not None:
        st.session_state[image_key] = new[0]


def _library(prefix: str, image_key: str, user: User) -> None:
    """One of the user's recent uploads and results as the reference."""
    search = st.text_input("Search your images", placeholder="file name, prompt or style", key=f"{prefix}.ref_search")
    with app.db_session() as session:
        items = library_items(session=session, user_id=user.id, search=search, limit=LIBRARY_CHOICES)
    if not items:
        st.caption("No image matches." if search.strip() else "Your uploads and results will be here.")
        return
    labels = {item.asset.sha256: plain(item.label) for item in items}
    chosen = st.selectbox("Image", list(labels), format_func=labels.get, key=f"{prefix}.reference_pick")
    if st.button("Use as reference", key=f"{prefix}.reference_use"):
        store = app.asset_store()
        if not store.exists(chosen):
            st.warning("That image is no longer stored (retention); pick another or upload it again.")
            return
        data = store.read(chosen)
        if (image := refusals.attempt(lambda: widgets.validated_upload(data))) is not None:
            st.session_state[image_key] = image
