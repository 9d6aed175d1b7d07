"""The source image of a run: an upload, or one from the user's history."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from studio.catalogue.recipes import read_recipe
from studio.db.tables import User
from studio.jobs.queries import recent_user_sources
from studio.media.validation import ValidatedImage
from studio.web import app, refusals, widgets


@dataclass(frozen=True)
class Source:
    upload: ValidatedImage
    name: str
    recipe: dict | None  # set when the file is a result made by this studio


def source_uploader(prefix: str) -> Source | None:
    uploaded = st.file_uploader(
        "Source image — JPG, PNG or WebP · 256–4096 px per side · up to 10 MB",
        type=["jpg", "jpeg", "png", "webp"],
        key=f"{prefix}.source_upload",
    )
    if uploaded is None:
        return None
    data = uploaded.getvalue()
    upload = refusals.attempt(lambda: widgets.validated_upload(data))
    if upload is None:
        return None
    for note in upload.notes:
        st.caption(f":material/info: {note}")
    return Source(upload=upload, name=uploaded.name, recipe=read_recipe(data))


def source_picker(prefix: str, user: User) -> Source | None:
    """A new upload, or a source the user uploaded before (from their history)."""
    origin = st.segmented_control("Source", ["Upload", "From history"], default="Upload", key=f"{prefix}.origin")
    if origin != "From history":
        return source_uploader(prefix)
    with app.db_session() as session:
        assets = {asset.id: asset for asset in recent_user_sources(session=session, user_id=user.id)}
    if not assets:
        st.info("No earlier sources yet: upload one.")
        return None
    asset = assets[
        st.selectbox(
            "Earlier source",
            list(assets),
            format_func=lambda i: (
                f"{assets[i].original_name or 'source'} · {assets[i].width}×{assets[i].height} · "
                f"{assets[i].created_at:%Y-%m-%d %H:%M}"
            ),
            key=f"{prefix}.history_source",
        )
    ]
    if not app.asset_store().exists(asset.sha256):
        st.warning("That file is no longer stored (retention); pick another or upload it again.")
        return None
    upload = widgets.validated_upload(app.asset_store().read(asset.sha256))
    return Source(upload=upload, name=asset.original_name or f"source-{asset.id}.png", recipe=None)
