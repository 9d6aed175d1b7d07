"""The Sweep page's parts: the sweep's axes, submitting its cells, and the live grid with scores and downloads.
Logic lives in studio.sweeps; this module only draws it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from pipelines.params import MAX_STRENGTH, Task
from studio.catalogue.presets import PresetSettings, save_preset
from studio.catalogue.requests import JobRequest, recipe_request
from studio.db.tables import Asset, Job, User
from studio.errors import Refused
from studio.jobs.submit import submit_sweep
from studio.media.storage import AssetStore
from studio.sweeps.export import cell_label, grid_image, sweep_zip
from studio.sweeps.plan import EDIT_SWEEP, SecondAxis, SweepPlan, parse_values, strength_range
from studio.sweeps.results import Sweep, get_user_sweep
from studio.sweeps.scores import structure_score
from studio.web import app, jobs, library, refusals, widgets
from studio.web.live import live_panel, poll_backoff
from studio.web.recipes import load_recipe_into_form
from studio.web.sources import Source
from studio.web.styles import catalogue_or_stop
from studio.web.text import plain

POLL_SECONDS = 1.0
# The strength range's widgets: strengths are in (0, MAX_STRENGTH], picked on a grid of RANGE_STEP.
RANGE_STEP, MIN_STEP = 0.05, 0.01
DEFAULT_RANGE, DEFAULT_STEP = (0.2, 0.8), 0.15


def plan_inputs(prefix: str, loras: Sequence[tuple[str, float]] = ()) -> SweepPlan | None:
    """Strengths (a range or a list) and an optional second axis (with `loras`, the run's LoRAs and weights: one
    LoRA's weight may be it); None (with the reason shown) if unusable."""
    try:
        if st.segmented_control("Strengths", ["Range", "List"], default="Range", key=f"{prefix}.mode") == "List":
            text = st.text_input("Strengths", value="0.2, 0.35, 0.5, 0.65, 0.8", key=f"{prefix}.strength_list")
            strengths = parse_values(text, what="Strengths")
        else:
            start, stop = st.slider(
                "From … to",
                min_value=RANGE_STEP,
                max_value=MAX_STRENGTH,
                value=DEFAULT_RANGE,
                step=RANGE_STEP,
                key=f"{prefix}.range",
            )
            step = st.number_input(
                "Step",
                min_value=MIN_STEP,
                max_value=MAX_STRENGTH,
                value=DEFAULT_STEP,
                step=MIN_STEP,
                key=f"{prefix}.step",
            )
            strengths = strength_range(start, stop, step)
        axis, values, lora = _axis_inputs(prefix, "Second axis", ["none", *_axes(loras)], loras)
        return SweepPlan(strengths=strengths, axis=axis, values=values, lora=lora)
    except Refused as exc:
        st.error(str(exc))
        return None


def edit_plan_inputs(prefix: str, loras: Sequence[tuple[str, float]] = ()) -> SweepPlan | None:
    """An edit's sweep: seeds, guidance scales or one LoRA's weights down one column (an edit has no strength); None
    with the reason shown if unusable."""
    try:
        axis, values, lora = _axis_inputs(prefix, "Vary", _axes(loras), loras)
        return SweepPlan(strengths=EDIT_SWEEP, axis=axis, values=values, lora=lora)
    except Refused as exc:
        st.error(str(exc))
        return None


def _axes(loras: Sequence[tuple[str, float]]) -> list[SecondAxis]:
    """The second axes a sweep offers: a LoRA's weight only once the run has a LoRA."""
    return [axis for axis in SecondAxis if axis is not SecondAxis.lora_weight or loras]


def _axis_inputs(
    prefix: str, label: str, choices: list[str], loras: Sequence[tuple[str, float]]
) -> tuple[SecondAxis | None, tuple[float, ...], str]:
    """The second axis ("none" among `choices`: none), its values, and the LoRA a LoRA-weight axis varies."""
    for key, offered in ((f"{prefix}.axis", choices), (f"{prefix}.axis_lora", [name for name, _ in loras])):
        if key in st.session_state and st.session_state[key] not in offered:
            del st.session_state[key]  # its LoRA was taken off the run since it was picked
    axis_name = st.selectbox(
        label,
        choices,
        format_func=lambda a: {"none": "None"}.get(a) or SecondAxis(a).label.capitalize(),
        key=f"{prefix}.axis",
    )
    if axis_name == "none":
        return None, (), ""
    axis, lora = SecondAxis(axis_name), ""
    if axis is SecondAxis.lora_weight:
        lora = st.selectbox("LoRA", [name for name, _ in loras], key=f"{prefix}.axis_lora")
        st.caption(
            "Adapters are set on the whole model, so each LoRA weight runs as a denoising pass of its own (the "
            "strengths of one weight share a pass). Each cell is charged as one run, as always."
        )
    default = {SecondAxis.seed: "1, 2, 3", SecondAxis.guidance: "5, 7.5, 10", SecondAxis.lora_weight: "0, 0.5, 1"}
    text = st.text_input(f"{axis.label.capitalize()} values", value=default[axis], key=f"{prefix}.axis_values")
    return axis, parse_values(text, what=axis.label), lora


def submit(
    config, user: User, source: Source, cells: list[JobRequest], *, mask: Image.Image | None = None, sweep_key: str
) -> None:
    """Queue the sweep (the page then shows it under `sweep_key`), or show why it was refused."""
    key_recipe = {"sweep": [cell.job_params() for cell in cells], "model": cells[0].model}
    submitted = refusals.attempt(
        lambda: jobs.submit_from_page(
            submit_sweep, config=config, user=user, source=source, mask=mask, key_recipe=key_recipe, requests=cells
        )
    )
    if submitted is not None:
        st.session_state[sweep_key] = submitted[0].sweep_id


def sweep_panel(*, sweep_id: str, user_id: int) -> None:
    """The grid: live progress per cell while the sweep runs, then images, scores and downloads."""
    with app.db_session() as session:
        sweep = get_user_sweep(session=session, user_id=user_id, sweep_id=sweep_id)
    if sweep is None:
        return
    live = not sweep.finished
    live_panel(f"poll.sweep.{sweep_id}", _panel_body, sweep_id, user_id, live, live=live)


def _panel_body(sweep_id: str, user_id: int, was_live: bool) -> None:
    with app.db_session() as session:
        sweep = get_user_sweep(session=session, user_id=user_id, sweep_id=sweep_id)
    if sweep.finished and was_live:
        st.rerun()  # once, so the fragment stops polling
    if was_live:
        poll_backoff(
            f"poll.sweep.{sweep_id}",
            tuple((c.job.status, c.job.progress_step, c.job.cancel_requested) for c in sweep.cells),
        )
    total = sum(cell.job.cost for cell in sweep.cells)
    st.caption(f"Sweep of {len(sweep.cells)} cells · {total} credits · {_mode(sweep)}")
    for row in sweep.rows or (None,):
        if row is not None:
            st.markdown(f"**{sweep.axis_label} {row:g}**")
        for column, strength in zip(st.columns(len(sweep.strengths)), sweep.strengths, strict=True):
            with column:
                _cell(sweep, sweep.cell(row, strength))
    if sweep.finished:
        _downloads_and_scores(sweep)


def _mode(sweep: Sweep) -> str:
    recipes = [cell.job.recipe for cell in sweep.cells if cell.job.recipe]
    if sweep.cells[0].job.task == Task.edit:
        return "runs cell by cell (an edit's seeds, guidance scales and LoRA weights share no pass)"
    per_weight = sweep.axis is SecondAxis.lora_weight
    if not recipes:
        if per_weight:
            return f"runs one denoising pass per LoRA weight ({len(sweep.rows)}: adapters apply to the whole model)"
        return "runs in one denoising pass when a worker takes it"
    mode = recipes[0].get("sweep", {}).get("mode", "one-pass")
    if mode != "one-pass":
        return "ran cell by cell (this model or scheduler cannot share a pass)"
    if per_weight:
        return f"ran one denoising pass per LoRA weight ({len(sweep.rows)}: adapters apply to the whole model)"
    return "ran in one denoising pass"


def _cell(sweep: Sweep, cell) -> None:
    if cell is None:
        return
    job: Job = cell.job
    if cell.result is not None:
        st.image(widgets.thumbnail(cell.result.sha256, str(app.asset_store().root)), caption=cell_label(sweep, cell))
        enlarge_col, use_col = st.columns(2)
        if enlarge_col.button("Enlarge", key=f"enlarge-{job.id}"):
            _enlarge(job.id, cell_label(sweep, cell), cell.result.sha256)
        if use_col.button("Use this one", key=f"use-{job.id}", help="Open its page with this cell's settings."):
            page = "edit" if job.task == Task.edit else "transform"
            load_recipe_into_form(page, job.recipe, catalogue_or_stop(app.settings()))
            st.switch_page(f"pages/{page}.py")
        with st.popover("Save as preset"):
            _save_cell_preset(job)
        library.open_in(user_id=job.user_id, job_id=job.id, key=f"cell-{job.id}")
    elif job.status.is_final:
        st.warning(
            f"{cell_label(sweep, cell)}: {job.status.value}. {plain(job.error or '')} {job.cost} credits refunded."
        )
    else:
        fraction = job.progress_step / job.progress_total if job.progress_total else 0.0
        st.progress(fraction, text=f"{cell_label(sweep, cell)} · {job.status.value}")


def _save_cell_preset(job: Job) -> None:
    """Keep the winner: this cell's exact settings (its strength, seed, guidance) as a preset."""
    config = app.settings()
    name = st.text_input(
        "Name", f"{job.style or 'own'} strength {job.params['strength']:g}", key=f"preset-name-{job.id}"
    )
    shared = st.checkbox("Share with my team", key=f"preset-shared-{job.id}")
    if st.button("Save", key=f"preset-save-{job.id}"):

        def save() -> None:
            request = recipe_request(settings=config, catalogue=catalogue_or_stop(config), recipe=job.recipe)
            with app.db_write_session() as session:
                owner = session.get(User, job.user_id)
                return save_preset(
                    session=session, owner=owner, name=name, preset=PresetSettings.from_request(request), shared=shared
                )

        if refusals.attempt(save) is not None:
            st.success(f"Saved the preset “{plain(name.strip())}”.")


@st.dialog("Cell", width="large")
def _enlarge(job_id: int, label: str, sha256: str) -> None:
    st.image(app.asset_store().read(sha256), caption=f"Job #{job_id} · {label}")


@st.cache_data(max_entries=256, show_spinner=False)
def _score(source_sha256: str, result_sha256: str, _store_root: str) -> tuple[float, float]:
    store = AssetStore(_store_root)
    with Image.open(store.path(source_sha256)) as source, Image.open(store.path(result_sha256)) as result:
        score = structure_score(source, result)
    return score.ssim, score.edges


def _downloads_and_scores(sweep: Sweep) -> None:
    store = app.asset_store()
    with app.db_session() as session:
        source = session.get(Asset, sweep.cells[0].job.source_asset_id)
    grid = io.BytesIO()
    grid_image(sweep, store).save(grid, format="PNG")
    grid_col, zip_col = st.columns(2)
    grid_col.download_button("Download grid", grid.getvalue(), f"sweep-{sweep.id[:8]}.png", "image/png")
    zip_col.download_button(
        "Download ZIP (cells + manifest)", sweep_zip(sweep, store), f"sweep-{sweep.id[:8]}.zip", "application/zip"
    )
    if source is None:
        return
    figure = go.Figure()
    for row in sweep.rows or (None,):
        cells = [c for c in (sweep.cell(row, s) for s in sweep.strengths) if c is not None and c.result is not None]
        scores = [_score(source.sha256, c.result.sha256, str(store.root)) for c in cells]
        suffix = "" if row is None else f" ({sweep.axis_label} {row:g})"
        strengths = [c.strength for c in cells]
        figure.add_scatter(x=strengths, y=[s[0] for s in scores], mode="lines+markers", name=f"SSIM{suffix}")
        figure.add_scatter(x=strengths, y=[s[1] for s in scores], mode="lines+markers", name=f"edge overlap{suffix}")
    figure.update_layout(
        title="Structure kept vs strength",
        xaxis_title="strength",
        yaxis_title="score (1 = as the source)",
        yaxis_range=[0, 1.05],
        height=360,
        margin={"t": 50, "b": 40},
    )
    st.plotly_chart(figure, key=f"scores-{sweep.id}")
    st.caption("SSIM compares luminance structure; edge overlap compares edge maps (F1, 1 px tolerance).")
