"""Edit: a source and an instruction ("put the bottle on white marble, keep the label") for an instruction editor
(FLUX.1 Kontext, Qwen-Image-Edit), or a sweep of its seeds or guidance; the job (or the grid) on the right."""

import streamlit as st

from studio.sweeps.plan import sweep_cells, sweep_cost
from studio.web import app, auth, edit, form, jobs, library, recipes, refusals, styles, submit, sweeps, widgets

PREFIX = "edit"
JOB_KEY = "edit.last_job_id"
SWEEP_KEY = "edit.last_sweep_id"

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Edit")
st.caption("Say what to change and what to keep; an instruction editor does it, no strength to tune.")
widgets.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    source = library.pick_source(PREFIX, user)
    if source is not None and source.recipe is not None:
        recipes.recipe_offer(PREFIX, source, catalogue, config, user, job_key=JOB_KEY)

    style = styles.style_picker(PREFIX, catalogue, config, own_settings=False)
    params, quality, _ = form.run_settings(PREFIX, style)
    references = edit.reference_uploader(PREFIX, style)
    loras = form.lora_settings(PREFIX, catalogue, config, style) if style is not None else ()
    mask = edit.edit_mask(PREFIX, source, style)

    request = None
    if source is not None and style is not None:
        request = submit.make_request(config, catalogue, style, params, quality, references=references, loras=loras)
    if request is not None:
        submit.price_caption(config, user, request, source.upload)
    edit_clicked = st.button(
        f"Edit · {form.step_count(config, style, params)} denoising steps",
        type="primary",
        disabled=request is None,
        key="edit_button",
    )
    cells, sweep_clicked = None, False
    with st.expander("Sweep: the same edit over several seeds, guidance scales or LoRA weights"):
        plan = sweeps.edit_plan_inputs(PREFIX, loras)
        if request is not None and request.references:
            st.caption("A sweep takes no reference images: remove them to sweep.")
        elif request is not None and plan is not None:
            cells = refusals.attempt(lambda: sweep_cells(request, plan))
        if cells:
            cost = sweep_cost(settings=config, cells=cells, width=source.upload.width, height=source.upload.height)
            st.caption(f"{len(cells)} cells · costs **{cost}** credits in all (each charged and refunded on its own)")
        sweep_clicked = st.button(f"Run sweep · {len(cells or [])} cells", disabled=not cells, key="edit_sweep_button")

with result_col:
    if edit_clicked:
        st.session_state.pop(SWEEP_KEY, None)
        submit.submit(config, user, source, request, mask=mask, references=references, job_key=JOB_KEY)
    if sweep_clicked:
        st.session_state.pop(JOB_KEY, None)
        sweeps.submit(config, user, source, cells, mask=mask, sweep_key=SWEEP_KEY)
    if sweep_id := st.session_state.get(SWEEP_KEY):
        sweeps.sweep_panel(sweep_id=sweep_id, user_id=user.id)
    elif job_id := st.session_state.get(JOB_KEY):
        jobs.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here, beside the source.")
