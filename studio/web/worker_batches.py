"""The admin Models page's current batches: the jobs each live worker is running now (from their leases), with the
most it runs in one loop (STUDIO_BATCH_MAX, or the number its GPU's memory allows) and why."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from studio.jobs.heartbeats import WorkerState, current_batches
from studio.web import app


def batch_rows(states: list[WorkerState]) -> list[dict[str, object]]:
    """One row per live worker: the jobs it holds (id, owner, style, model, step) and its batch limit."""
    alive = [state for state in states if state.status == "alive"]
    with app.db_session() as session:
        batches = current_batches(session=session, names=[state.row.name for state in alive])
    return [
        {
            "worker": state.row.name,
            "batch size": len(batches[state.row.name]),
            "STUDIO_BATCH_MAX": state.row.batch_max,
            "chosen by": state.row.batch_basis or "—",
            "jobs": "; ".join(
                f"#{job['job']} {job['user']} ({job['style']}, {job['model']}, "
                + (f"step {job['step']})" if job["step"] else "starting)")
                for job in batches[state.row.name]
            )
            or "idle",
        }
        for state in alive
    ]


def show(states: list[WorkerState]) -> None:
    """The live workers' current batches (nothing when no worker is alive)."""
    if rows := batch_rows(states):
        st.caption(
            "Current batches: the jobs each live worker holds now (read from their leases), run in one denoising "
            "loop. `STUDIO_BATCH_MAX` is the most one loop takes, as the worker last decided: the setting, or on a "
            "GPU the number its free memory allows at the model's measured footprint per image."
        )
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
