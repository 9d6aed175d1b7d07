"""The style picker: the catalogue's styles a page offers, each bringing its own defaults."""

from __future__ import annotations

import streamlit as st

from pipelines.params import Task
from studio.billing.pricing import Quality
from studio.catalogue.loras import with_registered_loras
from studio.catalogue.styles import Catalogue, CatalogueError, Style, load_catalogue, starting_steps
from studio.catalogue.visibility import hidden_models, production_styles
from studio.config import Settings
from studio.kits.access import team_kits
from studio.kits.requests import KitStyle, kit_style
from studio.kits.settings import KitSettings
from studio.web import app, auth
from studio.web.text import plain

OWN_SETTINGS = ""  # the style picker's "no style" choice
# Forms of these pages repaint part of a source, so they offer only image-to-image styles (no upscalers).
IMAGE_TO_IMAGE_PAGES = frozenset({"inpaint", "outpaint", "sweep"})
EDIT_PAGE = "edit"  # the page of the instruction editors' styles (Task.edit), which no other page offers
# The pages that offer the team's brand kits (an image-to-image run with the kit's LoRAs).
KIT_PAGES = frozenset({"transform", "inpaint", "batch"})


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


def offered_kits(prefix: str, catalogue: Catalogue) -> list[KitStyle]:
    """The brand kits of the signed-in user's team that the form of page `prefix` offers (none for another team's)."""
    user = auth.current_user() if prefix in KIT_PAGES else None
    if user is None:
        return []
    with app.db_session() as session:
        kits = team_kits(session=session, user=user)
    return [kit_style(kit, catalogue) for kit in kits if kit.settings["model"] in catalogue.models]


def style_picker(prefix: str, catalogue: Catalogue, config: Settings, *, own_settings: bool = True) -> Style | None:
    """A style from the catalogue, or None for the user's own settings on the configured model (unless
    `own_settings` is off: the Edit page runs the catalogue's editors only)."""
    if refused := st.session_state.pop(_load_refused_key(prefix), None):
        st.error(refused)  # settings someone tried to load into this form (a recipe, a preset, a remix)
    with app.db_session() as session:
        hidden = hidden_models(session=session)  # models an admin took out of production (the Models page)
    # The team's kits first, then the catalogue's styles.
    offered = production_styles([*offered_kits(prefix, catalogue), *offered_styles(catalogue, prefix)], hidden)
    by_id = {style.id: style for style in offered}
    ready = {s.id: catalogue.availability(s.model, config) for s in offered}

    def label(style_id: str) -> str:
        if style_id == OWN_SETTINGS:
            return "Your own prompt and settings"
        style = by_id[style_id]
        kind = " · brand kit" if isinstance(style, KitStyle) else ""
        return f"{style.name}{kind} · {style.credits} cr" + ("" if ready[style_id].ready else " · not available here")

    key = f"{prefix}.style"
    choices = [OWN_SETTINGS, *ready] if own_settings else list(ready)
    if st.session_state.get(key) not in choices:
        st.session_state.pop(key, None)  # a style removed from the catalogue (or a kit deleted) since it was picked
    style_id = st.selectbox(
        "Style",
        choices,
        format_func=label,
        key=key,
        on_change=_apply_style_defaults,
        args=(prefix, by_id),
    )
    if style_id is None:
        st.info("The style catalogue offers no style for this page: ask an admin to add one.")
        return None
    if style_id == OWN_SETTINGS:
        st.caption(f"Runs the configured model `{config.model}` with exactly your prompt.")
        return None
    style = by_id[style_id]
    model = catalogue.models[style.model]
    family = f" · {model.family_info.label}" if style.task.upscale_factor is None else ""
    licence = f" · licence: {model.licence}" if model.licence else ""
    st.caption(f"{style.description} · model: {model.about or model.location}{family}{licence}")
    if isinstance(style, KitStyle):
        st.caption(f"Prompt template: {plain(style.prompt)}")
    if not ready[style_id].ready:
        st.warning(f"**{model.name}** (`{model.location}`) is not available here. {ready[style_id].note}")
    return style


def _apply_style_defaults(prefix: str, offered: dict[str, Style]) -> None:
    """A newly picked style brings its own strength, guidance and quality; a brand kit also its steps, and its LoRAs
    replace the form's.

    The widget's state may be gone: signing out clears the forms (studio.web.auth), and a message the browser sent
    before it knew still carries the old value, which runs this callback once more."""
    style = offered.get(st.session_state.get(f"{prefix}.style"))
    if style is None:
        return
    st.session_state[f"{prefix}.strength"] = style.strength
    st.session_state[f"{prefix}.guidance"] = style.guidance
    if isinstance(style, KitStyle):
        kit = KitSettings.from_dict(style.brand_kit.settings)
        st.session_state[f"{prefix}.quality"] = kit.quality.value
        st.session_state[f"{prefix}.steps"] = kit.steps
        st.session_state[f"{prefix}.loras"] = []
        return
    if st.session_state.get(f"{prefix}.quality") not in style.qualities:
        st.session_state[f"{prefix}.quality"] = style.qualities[0].value
    apply_quality_defaults(prefix, style)  # a distilled model starts from its own few steps (ModelEntry.steps)


def apply_quality_defaults(prefix: str, style: Style | None) -> None:
    quality = Quality(st.session_state.get(f"{prefix}.quality") or Quality.standard)
    st.session_state[f"{prefix}.steps"] = starting_steps(style, quality)


def _load_refused_key(prefix: str) -> str:
    return f"{prefix}.load_refused"
