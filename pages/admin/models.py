"""Admin · Models: the catalogue's models (licence, price, memory settings) with a switch that takes one out of
production; the LoRAs users may add, registering new ones and removing registered ones; the queue workers — alive
or not, their device, the job in hand, the models they loaded with their
sizes, and the model memory budget each keeps to."""

import pandas as pd
import streamlit as st

from studio.db.tables import Role
from studio.jobs.heartbeats import (
    HEARTBEAT_SECONDS,
    STALE_AFTER_SECONDS,
    loaded_model_rows,
    memory_summary,
    workers,
)
from studio.web import app, auth, models, worker_batches

admin = auth.require_user(Role.admin)

st.title("Models")
models.catalogue_models(admin)
models.loras(admin)

st.subheader("Workers")
st.caption(
    f"Every queue worker writes a heartbeat every {HEARTBEAT_SECONDS:.0f} s. *Silent* means none for "
    f"{STALE_AFTER_SECONDS:.0f} s (killed, hung or its host is down): its job goes back to the queue when "
    "its lease runs out."
)
with app.db_session() as session:
    states = workers(session=session)
if not states:
    st.info("No worker has reported yet. Start one with `python -m studio worker --device cuda:0`.")
else:
    alive = sum(state.status == "alive" for state in states)
    st.metric("Workers alive", alive, help="heartbeat within the last " + f"{STALE_AFTER_SECONDS:.0f} s")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "worker": state.row.name,
                    "status": state.status,
                    "host": state.row.host,
                    "pid": state.row.pid,
                    "device": state.row.device,
                    "current job": state.row.current_job_id,
                    "loaded models": ", ".join(state.row.loaded_models) or "—",
                    **memory_summary(state),
                    "last seen (s ago)": round(state.seconds_since, 1),
                    "started": state.row.started_at,
                }
                for state in states
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    worker_batches.show(states)
    st.caption(
        "Each worker keeps its loaded models within its budget (`STUDIO_MODEL_MEMORY`, default 90 % of the device's "
        "memory): loading one more evicts the least recently used first; a model in use by a run is never evicted."
    )
    for state in states:
        if rows := loaded_model_rows(state):
            with st.expander(f"{state.row.name}: {len(rows)} loaded, least recently used first"):
                st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
if st.button("Refresh"):
    st.rerun()
