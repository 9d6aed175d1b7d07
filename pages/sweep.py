"""Sweep: one source through several strengths (and seeds, guidance scales or a LoRA's weights) in one pass (one per
LoRA weight), as a grid."""

import streamlit as st

from studio.sweeps.plan import sweep_cells, sweep_cost
from studio.web import app, auth, form, library, masks, presets, recipes, refusals, styles, submit, sweeps, widgets

PREFIX = "sweep"
SWEEP_KEY = "sweep.last_sweep_id"

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Strength sweep")
widgets.model_notice(config)

settings_col, grid_col = st.columns([1, 2], gap="large")

with settings_col:
    source = library.pick_source(PREFIX, user)
    mask = inpaint = None
    if source is not None:
        if source.recipe is not None:  # a sweep varies the strength: the recipe's settings, not a re-run
            recipes.recipe_offer(PREFIX, source, catalogue, config, user, job_key=SWEEP_KEY, rerun=False)
        if st.toggle("Inpaint: repaint only a masked area", key="sweep.inpaint"):
            mask = masks.mask_editor(PREFIX, source)
            inpaint = masks.mask_options(PREFIX)
    style = styles.style_picker(PREFIX, catalogue, config)
    params, quality, _ = form.run_settings(PREFIX, style, with_strength=False)
    loras = form.lora_settings(PREFIX, catalogue, config, style)
    plan = sweeps.plan_inputs(PREFIX, loras)

    cells = request = None
    if source is not None and plan is not None and (inpaint is None or mask is not None):
        request = submit.make_request(config, catalogue, style, params, quality, inpaint=inpaint, loras=loras)
        if request is not None:
            cells = refusals.attempt(lambda: sweep_cells(request, plan))
    presets.preset_bar(PREFIX, user, catalogue, request if inpaint is None else None)
    if cells:
        cost = sweep_cost(settings=config, cells=cells, width=source.upload.width, height=source.upload.height)
        st.caption(f"{len(cells)} cells · costs **{cost}** credits in all (each cell charged and refunded on its own)")
    sweep_clicked = st.button(
        f"Run sweep · {len(cells) if cells else 0} cells", type="primary", disabled=not cells, key="sweep_button"
    )

with grid_col:
    if sweep_clicked:
        sweeps.submit(config, user, source, cells, mask=mask, sweep_key=SWEEP_KEY)
    if sweep_id := st.session_state.get(SWEEP_KEY):
        sweeps.sweep_panel(sweep_id=sweep_id, user_id=user.id)
    else:
        st.caption("The grid appears here: strengths across, the second axis down.")
