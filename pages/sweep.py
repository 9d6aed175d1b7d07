"""Sweep: one source through several strengths (and seeds or guidance scales) in one pass, as a grid."""

import streamlit as st

from studio import ui, ui_forms, ui_sweeps
from studio.job_requests import SubmitRefused
from studio.sweeps import sweep_cells, sweep_cost

PREFIX = "sweep"
SWEEP_KEY = "sweep.last_sweep_id"

user = ui.require_user()
config = ui.settings()
catalogue = ui_forms.catalogue_or_stop(config)

st.title("Strength sweep")
ui.model_notice(config)

settings_col, grid_col = st.columns([1, 2], gap="large")

with settings_col:
    source = ui_forms.source_picker(PREFIX, user)
    mask = inpaint = None
    if source is not None:
        st.image(source.upload.image, caption=f"{source.name} · {source.upload.width}×{source.upload.height}")
        if source.recipe is not None:  # a sweep varies the strength: the recipe's settings, not a re-run
            ui_forms.recipe_offer(PREFIX, source, catalogue, config, user, job_key=SWEEP_KEY, rerun=False)
        if st.toggle("Inpaint: repaint only a masked area", key="sweep.inpaint"):
            mask = ui_forms.mask_editor(PREFIX, source)
            inpaint = ui_forms.mask_options(PREFIX)
    style = ui_forms.style_picker(PREFIX, catalogue, config)
    params, quality, _ = ui_forms.run_settings(PREFIX, style, with_strength=False)
    plan = ui_sweeps.plan_inputs(PREFIX)

    cells = request = None
    if source is not None and plan is not None and (inpaint is None or mask is not None):
        request = ui_forms.make_request(config, catalogue, style, params, quality, inpaint=inpaint)
        if request is not None:
            try:
                cells = sweep_cells(request, plan)
            except SubmitRefused as exc:
                st.error(str(exc))
    ui_forms.preset_bar(PREFIX, user, catalogue, request if inpaint is None else None)
    if cells:
        cost = sweep_cost(settings=config, cells=cells, width=source.upload.width, height=source.upload.height)
        st.caption(f"{len(cells)} cells · costs **{cost}** credits in all (each cell charged and refunded on its own)")
    sweep_clicked = st.button(
        f"Run sweep · {len(cells) if cells else 0} cells", type="primary", disabled=not cells, key="sweep_button"
    )

with grid_col:
    if sweep_clicked:
        ui_sweeps.submit(config, user, source, cells, mask=mask, sweep_key=SWEEP_KEY)
    if sweep_id := st.session_state.get(SWEEP_KEY):
        ui_sweeps.sweep_panel(sweep_id=sweep_id, user_id=user.id)
    else:
        st.caption("The grid appears here: strengths across, the second axis down.")
