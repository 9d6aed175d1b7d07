"""Presets on a form: apply one, save the current settings as one, rename or delete one."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from studio.catalogue.form_settings import FormSettings
from studio.catalogue.presets import (
    PresetSettings,
    SeedPolicy,
    delete_preset,
    preset_request,
    rename_preset,
    save_preset,
    visible_presets,
)
from studio.catalogue.requests import JobRequest
from studio.catalogue.styles import Catalogue
from studio.db.tables import Role, User
from studio.errors import Refused
from studio.web import app, refusals
from studio.web.recipes import load_into_form
from studio.web.styles import _load_refused_key


def preset_bar(prefix: str, user: User, catalogue: Catalogue, current: JobRequest | None) -> None:
    """Apply a saved preset to the form, save the current settings as one, rename or delete one."""
    with st.expander("Presets", icon=":material/bookmarks:"):
        with app.db_session() as session:
            presets = {p.id: p for p in visible_presets(session=session, user=user)}
        if presets:
            preset_id = st.selectbox(
                "Preset",
                list(presets),
                format_func=lambda i: presets[i].name + ("" if presets[i].owner_id == user.id else " · shared"),
                key=f"{prefix}.preset",
            )
            chosen = presets[preset_id]
            st.button(
                "Apply",
                key=f"{prefix}.preset_apply",
                on_click=_apply,
                args=(prefix, PresetSettings.from_dict(chosen.settings), user, catalogue),
            )
            with st.popover("Rename or delete", disabled=chosen.owner_id != user.id and user.role is not Role.admin):
                new_name = st.text_input("New name", chosen.name, key=f"{prefix}.preset_rename")
                if st.button("Rename", key=f"{prefix}.preset_rename_button"):
                    _preset_change(lambda s: rename_preset(session=s, user=user, preset_id=chosen.id, name=new_name))
                if st.button("Delete", key=f"{prefix}.preset_delete"):
                    _preset_change(lambda s: delete_preset(session=s, user=user, preset_id=chosen.id))
        name = st.text_input("Save the current settings as", key=f"{prefix}.preset_name")
        shared = st.checkbox("Share with my team", key=f"{prefix}.preset_shared", disabled=user.team_id is None)
        policy = SeedPolicy(
            st.radio(
                "Seed for each image",
                [p.value for p in SeedPolicy],
                format_func=lambda p: {"fixed": "Fixed (most consistent)", "random": "New seed per image"}[p],
                horizontal=True,
                key=f"{prefix}.preset_policy",
            )
        )
        with_reference = current is not None and current.reference is not None
        if with_reference:
            st.caption("Presets do not keep a reference image yet: remove it to save these settings as a preset.")
        disabled = current is None or not name.strip() or with_reference
        if st.button("Save preset", key=f"{prefix}.preset_save", disabled=disabled):
            preset = PresetSettings.from_request(current, seed_policy=policy)
            _preset_change(lambda s: save_preset(session=s, owner=user, name=name, preset=preset, shared=shared))
        if current is None:
            st.caption("Upload a source and fill in the form to save its settings.")


def _apply(prefix: str, preset: PresetSettings, user: User, catalogue: Catalogue) -> None:
    """Load the preset into the form, unless what it pinned (the model, a LoRA's file, the kit) changed since.

    Its ControlNet is left out of that check: a guide the style's family lacks is the form's to show, as for any
    settings loaded into it."""
    try:
        with app.db_session() as session:
            pins = replace(preset, control=None)
            preset_request(pins, session=session, user=user, settings=app.settings(), catalogue=catalogue)
    except Refused as exc:
        st.session_state[_load_refused_key(prefix)] = str(exc)
        return
    load_into_form(prefix, FormSettings.from_preset(preset), catalogue)


def _preset_change(change) -> None:
    def in_transaction() -> bool:
        with app.db_write_session() as session:
            change(session)
        return True

    if refusals.attempt(in_transaction):
        st.rerun()
