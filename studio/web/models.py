"""The admin Models page's catalogue table: every model with its licence, family, price and memory settings, and a
switch that takes it out of production (studio.catalogue.visibility); and the LoRAs users may add: the catalogue's,
and those registered here (checked to be a LoRA of their family, SHA-256 recorded; registering and removing are
audited)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pipelines.families import FAMILIES
from studio.accounts.admin import register_lora, remove_lora, set_model_hidden
from studio.catalogue.loras import registered_loras
from studio.catalogue.styles import ModelKind
from studio.catalogue.visibility import hidden_models
from studio.db.tables import User
from studio.web import app, refusals, styles

LORA_FLASH = "models.lora_flash"  # what the last register or remove did, shown after the rerun that lists it


def catalogue_models(admin: User) -> None:
    """The catalogue's models, then one switch per model that runs styles ("In production")."""
    catalogue = styles.catalogue_or_stop(app.settings())
    with app.db_session() as session:
        hidden = hidden_models(session=session)
    st.subheader("Catalogue models")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "model": entry.name,
                    "in production": entry.name not in hidden,
                    "kind": entry.kind.value,
                    "family": entry.family_info.label if entry.kind.has_family else "—",
                    "licence": entry.licence or "—",
                    "credits": entry.credits or None,  # a ControlNet has no price of its own
                    "offload": entry.offload,
                    "location": entry.location,
                }
                for entry in catalogue.models.values()
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    with st.expander("Take models out of production"):
        st.caption(
            "A model out of production keeps its catalogue entry, but its styles are not offered and every submit "
            "naming it (a recipe, a preset, an open form) is refused, charging nothing. Check its licence first: "
            "FLUX.1 [dev] and Kontext [dev] weights are for non-commercial use."
        )
        for entry in catalogue.models.values():
            if entry.kind is ModelKind.controlnet:
                continue  # steers a style's model; hide that model instead
            offered = entry.name not in hidden
            key = f"models.production.{entry.name}"
            if st.toggle(f"{entry.name} · {entry.licence or 'licence not set'}", value=offered, key=key) != offered:
                refusals.admin_action(
                    set_model_hidden, actor=admin, catalogue=catalogue, model=entry.name, hidden=offered
                )
                st.rerun()


def loras(admin: User) -> None:
    """Every LoRA users may add, the form that registers one, and a remove button per registered one."""
    config = app.settings()
    catalogue = styles.catalogue_or_stop(config)  # with the registered LoRAs
    with app.db_session() as session:
        registered = registered_loras(session=session)
    st.subheader("LoRAs")
    if flash := st.session_state.pop(LORA_FLASH, None):
        st.success(flash)
    if catalogue.loras:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "LoRA": entry.name,
                        "family": entry.family_info.label,
                        "from": "registered here" if entry.name in registered else "catalogue file",
                        "location": entry.location,
                        "sha256": entry.sha256[:12] or "recorded per use",
                        "about": entry.about,
                    }
                    for entry in catalogue.loras.values()
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    with st.expander("Register a LoRA"):
        st.caption(
            "A .safetensors LoRA file on this machine (or a folder holding pytorch_lora_weights.safetensors), a hub "
            "id whose repo holds that file, or a file in a hub repo (owner/repo/file.safetensors). It is checked to "
            "be a LoRA for models of the family (its layers, read from the file) and its SHA-256 is recorded: a file "
            "that changes later is refused."
        )
        with st.form("models.lora_register", clear_on_submit=False):
            name = st.text_input("Name", max_chars=120, key="models.lora_name")
            location = st.text_input("Location", max_chars=1000, key="models.lora_location")
            family = st.selectbox(
                "Family", list(FAMILIES), format_func=lambda f: FAMILIES[f].label, key="models.lora_family"
            )
            about = st.text_input("About (shown to users)", max_chars=255, key="models.lora_about")
            if st.form_submit_button("Register"):
                done = refusals.admin_action(
                    register_lora,
                    actor=admin,
                    catalogue=catalogue,
                    settings=config,
                    name=name,
                    location=location,
                    family=family,
                    about=about,
                )
                if done is not None:
                    st.session_state[LORA_FLASH] = f"Registered the LoRA {done.name} (SHA-256 {done.sha256[:12]}…)."
                    st.rerun()
    for name in registered:
        clicked = st.button(f"Remove {name}", key=f"models.lora_remove.{name}", help="Queued jobs keep their file.")
        if clicked and refusals.admin_action(remove_lora, actor=admin, name=name) is not None:
            st.session_state[LORA_FLASH] = f"Removed the LoRA {name}."
            st.rerun()
