"""The style picker: the catalogue's styles a page offers, each bringing its own defaults."""

from __future__ import annotations

import streamlit as st

from pipelines.params import Task
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.loras import with_registered_loras
from studio.catalogue.styles import Catalogue, CatalogueError, Style, load_catalogue
from studio.catalogue.visibility import hidden_models, production_styles
from studio.config import Settings
from studio.web import app

OWN_SETTINGS = ""  # the style picker's "no style" choice
# Forms of these pages repaint part of a source, so they offer only image-to-image styles (no upscalers).
IMAGE_TO_IMAGE_PAGES = frozenset({"inpaint", "outpaint", "sweep"})
EDIT_PAGE = "edit"  # the page of the instruction editors' styles (Task.edit), which no other page offers


def catalogue_or_stop(config: Settings) -> Catalogue:
    """The style catalogue with the LoRAs admins registered on the Models page beside its own; the page stops with
    the reason when the catalogue file is broken."""
    try:
        catalogue = load_catalogue(config.catalogue_path)
    except CatalogueError as exc:
        st.error(f"The style catalogue is broken, so styles cannot be offered until an admin fixes it: {exc}")
        st.stop()
    with app.db_session() as session:
        return with_registered_loras(catalogue, session=session)


def offered_styles(catalogue: Catalogue, prefix: str) -> list[Style]:
    """The styles the form of page `prefix` offers, in catalogue order."""
    styles = [style for style in catalogue.styles.values() if (style.task == Task.edit) == (prefix == EDIT_PAGE)]
    if prefix in IMAGE_TO_IMAGE_PAGES:
        return [style for style in styles if style.task.upscale_factor is None]
    return styles


def style_picker(prefix: str, catalogue: Catalogue, config: Settings, *, own_settings: bool = True) -> Style | None:
    """A style from the catalogue, or None for the user's own settings on the configured model (unless
    `own_settings` is off: the Edit page runs the catalogue's editors only)."""
    if refused := st.session_state.pop(_load_refused_key(prefix), None):
        st.error(refused)  # settings someone tried to load into this form (a recipe, a preset, a remix)
    with app.db_session() as session:
        hidden = hidden_models(session=session)  # models an admin took out of production (the Models page)
    offered = production_styles(offered_styles(catalogue, prefix), hidden)
    ready = {s.id: catalogue.availability(s.model, config) for s in offered}

    def label(style_id: str) -> str:
        if style_id == OWN_SETTINGS:
            return "Your own prompt and settings"
        style = catalogue.styles[style_id]
        return f"{style.name} · {style.credits} cr" + ("" if ready[style_id].ready else " · not available here")

    key = f"{prefix}.style"
    choices = [OWN_SETTINGS, *ready] if own_settings else list(ready)
    if st.session_state.get(key) not in choices:
        st.session_state.pop(key, None)  # a style removed from the catalogue since it was picked
    style_id = st.selectbox(
        "Style",
        choices,
        format_func=label,
        key=key,
        on_change=_apply_style_defaults,
        args=(prefix, catalogue),
    )
    if style_id is None:
        st.info("The style catalogue offers no style for this page: ask an admin to add one.")
        return None
    if style_id == OWN_SETTINGS:
        st.caption(f"Runs the configured model `{config.model}` with exactly your prompt.")
        return None
    style = catalogue.styles[style_id]
    model = catalogue.models[style.model]
    family = f" · {model.family_info.label}" if style.task.upscale_factor is None else ""
    licence = f" · licence: {model.licence}" if model.licence else ""
    st.caption(f"{style.description} · model: {model.about or model.location}{family}{licence}")
    if not ready[style_id].ready:
        st.warning(f"**{model.name}** (`{model.location}`) is not available here. {ready[style_id].note}")
    return style


def _apply_style_defaults(prefix: str, catalogue: Catalogue) -> None:
    """A newly picked style brings its own strength, guidance and quality.

    The widget's state may be gone: signing out clears the forms (studio.web.auth), and a message the browser sent
    before it knew still carries the old value, which runs this callback once more."""
    style = catalogue.styles.get(st.session_state.get(f"{prefix}.style"))
    if style is None:
        return
    st.session_state[f"{prefix}.strength"] = style.strength
    st.session_state[f"{prefix}.guidance"] = style.guidance
    if st.session_state.get(f"{prefix}.quality") not in style.qualities:
        st.session_state[f"{prefix}.quality"] = style.qualities[0].value
        _apply_quality_defaults(prefix)


def _apply_quality_defaults(prefix: str) -> None:
    quality = Quality(st.session_state.get(f"{prefix}.quality") or Quality.standard)
    st.session_state[f"{prefix}.steps"] = QUALITY_TIERS[quality].steps


def _load_refused_key(prefix: str) -> str:
    return f"{prefix}.load_refused"
