"""One image library for every page: the source picker (*Upload* beside the user's recent uploads and results, with
search) and *Open in* on every result. The chosen source follows the user from page to page (session state keyed
by the user), so no page asks for the same file twice.

Adding a page that takes a source is one line in DESTINATIONS (its *Open in* button) and one call to `pick_source`
on the page. The queries are studio.media.library's.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from studio.catalogue.recipes import read_recipe
from studio.db.tables import User
from studio.media.library import LibraryItem, library_items, user_result_item
from studio.media.validation import ValidatedImage
from studio.web import app, refusals, widgets
from studio.web.sources import Source
from studio.web.text import plain

LIBRARY_SHOWN = 12  # images the Library tab shows (newest first; search finds older ones)
LIBRARY_COLUMNS = 4


@dataclass(frozen=True)
class Destination:
    label: str
    page: str  # the st.Page file
    icon: str


# Where a result can be sent on as the source (*Open in*), in the order offered.
DESTINATIONS = (
    Destination("Transform", "pages/transform.py", ":material/auto_fix_high:"),
    Destination("Edit", "pages/edit.py", ":material/edit_note:"),
    Destination("Inpaint", "pages/inpaint.py", ":material/format_paint:"),
    Destination("Expand", "pages/outpaint.py", ":material/open_in_full:"),
    Destination("Sweep", "pages/sweep.py", ":material/view_comfy:"),
    Destination("Compare", "pages/compare.py", ":material/compare:"),
)


def _current_key(user_id: int) -> str:
    return f"library.current.{user_id}"


def current_source(user_id: int) -> Source | None:
    """The source the user chose last, on any page."""
    return st.session_state.get(_current_key(user_id))


def choose(user_id: int, source: Source) -> None:
    """Make `source` the user's current source on every page."""
    st.session_state[_current_key(user_id)] = source


def pick_source(prefix: str, user: User, *, preview: bool = True) -> Source | None:
    """The page's source: *Upload* a file, or pick one from the user's *Library* (recent uploads and results, with
    search); either becomes the current source on every page. Shows it (unless `preview` is off: the page shows it
    itself) and returns it, or None until there is one."""
    upload_tab, library_tab = st.tabs(["Upload", "Library"])
    with upload_tab:
        _upload(prefix, user)
    with library_tab:
        _library(prefix, user)
    source = current_source(user.id)
    if source is None:
        return None
    if preview:
        st.image(source.upload.image, caption=f"{plain(source.name)} · {source.upload.width}×{source.upload.height}")
    if source.job_id is None:  # what validating an upload changed; a studio result only loses its recipe's text
        for note in source.upload.notes:
            st.caption(f":material/info: {note}")
    return source


def _upload(prefix: str, user: User) -> None:
    """A newly uploaded file becomes the current source; one that is refused is explained and changes nothing."""
    new = new_upload("Source image", key=f"{prefix}.source_upload")
    if new is not None:
        upload, name, data = new
        choose(user.id, Source(upload=upload, name=name, recipe=read_recipe(data)))


def new_upload(what: str, *, key: str) -> tuple[ValidatedImage, str, bytes] | None:
    """A file uploader for `what`: a file uploaded since the last rerun, validated (its image, name and bytes); None
    when nothing new was uploaded (a library pick made since the last upload stays chosen) or it was refused (the
    reason shown)."""
    uploaded = st.file_uploader(
        f"{what} — JPG, PNG or WebP · 256–4096 px per side · up to 10 MB", type=["jpg", "jpeg", "png", "webp"], key=key
    )
    seen_key = f"{key}_seen"
    if uploaded is None or st.session_state.get(seen_key) == uploaded.file_id:
        return None
    data = uploaded.getvalue()
    upload = refusals.attempt(lambda: widgets.validated_upload(data))
    if upload is None:
        return None
    st.session_state[seen_key] = uploaded.file_id
    return upload, uploaded.name, data


def _library(prefix: str, user: User) -> None:
    search = st.text_input(
        "Search your images", placeholder="file name, prompt or style", key=f"{prefix}.library_search"
    )
    with app.db_session() as session:
        items = library_items(session=session, user_id=user.id, search=search, limit=LIBRARY_SHOWN)
    if not items:
        st.caption("No image matches." if search.strip() else "Your uploads and results will be here.")
        return
    store = app.asset_store()
    for index, item in enumerate(items):
        if index % LIBRARY_COLUMNS == 0:
            columns = st.columns(LIBRARY_COLUMNS)
        with columns[index % LIBRARY_COLUMNS]:
            if store.exists(item.asset.sha256):
                st.image(widgets.thumbnail(item.asset.sha256, str(store.root)), width="stretch")
            st.caption(plain(item.label))
            if st.button("Use", key=f"{prefix}.use_asset.{item.asset.id}", width="stretch"):
                _use(user.id, item)


def _use(user_id: int, item: LibraryItem) -> bool:
    """Make a library item the current source; False (with the reason shown) if its file is gone."""
    store = app.asset_store()
    if not store.exists(item.asset.sha256):
        st.warning("That image is no longer stored (retention); pick another or upload it again.")
        return False
    data = store.read(item.asset.sha256)
    upload = refusals.attempt(lambda: widgets.validated_upload(data))
    if upload is None:
        return False
    if item.job is None:
        name, job_id = item.asset.original_name or f"upload-{item.asset.id}.png", None
    else:
        name, job_id = f"img2img-{item.job.id}.png", item.job.id
    choose(user_id, Source(upload=upload, name=name, recipe=read_recipe(data), job_id=job_id))
    return True


def open_in(*, user_id: int, job_id: int, key: str) -> None:
    """*Open in* Transform, Inpaint, Sweep, Compare…: the job's result becomes the current source and that page
    opens with it."""
    with st.popover("Open in", icon=":material/open_in_new:"):
        for destination in DESTINATIONS:
            if st.button(destination.label, icon=destination.icon, key=f"{key}.open_in.{destination.label}"):
                with app.db_session() as session:
                    item = user_result_item(session=session, user_id=user_id, job_id=job_id)
                if item is None:
                    st.warning("That result is no longer stored.")
                elif _use(user_id, item):
                    st.switch_page(destination.page)


def preselect_job(widget_key: str, user: User, job_ids: list[int]) -> None:
    """Preselect, in the selectbox `widget_key` (of job ids), the job whose result is the user's current source,
    once each time that source changes; the user's own choice in the box stands until then."""
    source = current_source(user.id)
    seen_key = f"{widget_key}.followed"
    if source is None or source.job_id not in job_ids or st.session_state.get(seen_key) == source.job_id:
        return
    st.session_state[widget_key] = source.job_id
    st.session_state[seen_key] = source.job_id
