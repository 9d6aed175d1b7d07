"""The Edit page's own inputs: an editor's reference images (Qwen-Image-Edit Plus) and the optional mask that
restricts an edit (FLUX.1 Kontext), each shown only for a style whose editor takes it."""

from __future__ import annotations

import streamlit as st
from PIL import Image

from studio.catalogue.styles import Style
from studio.media.validation import ValidatedImage
from studio.web import masks, refusals, widgets
from studio.web.sources import Source


def reference_uploader(prefix: str, style: Style | None) -> list[ValidatedImage]:
    """Up to the editor's number of reference images (a background, a style), validated as sources are; none for an
    editor that takes only the source. More than it takes are passed on, and the request refuses them by name."""
    if style is None or (extra := style.family_info.max_images - 1) < 1:
        return []
    files = st.file_uploader(
        f"Reference images (optional, up to {extra}) — picture 2, 3… of the instruction, e.g. a background",
        type=["jpg", "jpeg", "png", "webp"],
        accept_multiple_files=True,
        key=f"{prefix}.references",
    )
    references, names = [], []
    for file in files or []:
        data = file.getvalue()
        if (upload := refusals.attempt(lambda data=data: widgets.validated_upload(data))) is not None:
            references.append(upload)
            names.append(file.name)
    if references:
        st.image([reference.image for reference in references], caption=names, width=160)
    return references


def edit_mask(prefix: str, source: Source | None, style: Style | None) -> Image.Image | None:
    """A black-and-white mask the edit stays within, for an editor that takes one (the Inpaint page's mask editor,
    without soft masks); None: the whole image may change."""
    if source is None or style is None or style.family_info.pipelines.masked_edit is None:
        return None
    if not st.toggle("Only within a mask", key=f"{prefix}.use_mask", help="Paint where the edit may change the image."):
        return None
    return masks.mask_editor(prefix, source, soft_masks=False)
