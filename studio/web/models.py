"""The admin Models page's catalogue table: every model with its licence, family, price and memory settings, and a
switch that takes it out of production (studio.catalogue.visibility)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from studio.accounts.admin import set_model_hidden
from studio.catalogue.styles import ModelKind
from studio.catalogue.visibility import hidden_models
from studio.db.tables import User
from studio.web import app, refusals, styles


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
