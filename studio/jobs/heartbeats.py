"""Worker heartbeats: each worker rewrites its WorkerHeartbeat row every HEARTBEAT_SECONDS while it runs.

A worker is *alive* when its last beat is recent (STALE_AFTER_SECONDS), *stopped* after a graceful stop
(SIGTERM), and *silent* otherwise — killed, hung, or its host is down; its job then goes back to the
queue when the lease runs out (studio.jobs.leases), whatever this table says.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from studio.db.tables import Job, JobStatus, User, WorkerHeartbeat, utcnow

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS


def beat(
    *,
    session: Session,
    name: str,
    device: str,
    current_job_id: int | None,
    loaded_models: list[str],
    started_at: datetime,
    memory: dict | None = None,
    batch_max: int | None = None,
    batch_basis: str | None = None,
    now: datetime | None = None,
) -> None:
    """Insert or refresh this worker's row (the caller's session; committed here). `memory` is the model cache's
    report (pipelines.cache.MemoryReport.to_dict()), None before the worker loaded its model stack; `batch_max` the
    most jobs it runs in one loop as it last decided, and `batch_basis` why (studio.jobs.batching.batch_limit)."""
    now = now or utcnow()
    row = session.get(WorkerHeartbeat, name) or WorkerHeartbeat(
        name=name, host=socket.gethostname(), pid=os.getpid(), device=device, started_at=started_at
    )
    row.host, row.pid, row.device = socket.gethostname(), os.getpid(), device
    row.current_job_id, row.loaded_models, row.memory = current_job_id, list(loaded_models), memory
    row.batch_max, row.batch_basis = batch_max, batch_basis[:200] if batch_basis else None
    row.started_at, row.last_seen, row.stopped_at = started_at, now, None
    session.add(row)
    session.commit()


def mark_stopped(*, session: Session, name: str, now: datetime | None = None) -> None:
    row = session.get(WorkerHeartbeat, name)
    if row is not None:
        row.stopped_at = row.last_seen = now or utcnow()
        row.current_job_id = None
        session.add(row)
        session.commit()


@dataclass(frozen=True)
class WorkerState:
    row: WorkerHeartbeat
    status: str  # "alive", "stopped" or "silent"
    seconds_since: float


def workers(*, session: Session, now: datetime | None = None) -> list[WorkerState]:
    """Every worker that ever beat, the most recently seen first."""
    now = now or utcnow()
    rows = session.exec(select(WorkerHeartbeat).order_by(col(WorkerHeartbeat.last_seen).desc())).all()
    states = []
    for row in rows:
        since = (now - row.last_seen).total_seconds()
        status = "stopped" if row.stopped_at else ("alive" if since <= STALE_AFTER_SECONDS else "silent")
        states.append(WorkerState(row, status, since))
    return states


def current_batches(*, session: Session, names: list[str]) -> dict[str, list[dict[str, object]]]:
    """The jobs each named worker holds now, oldest claim first: one row per job with its owner, style and model.

    Read from the leases (processing jobs whose `worker` is the name), not from the heartbeat: a lease changes in
    the transaction that claims or ends the job, so the list is exact at the moment it is read, while a heartbeat
    is up to HEARTBEAT_SECONDS old. A sweep's cells share one pass too, and are listed as its batch.
    """
    rows = session.exec(
        select(Job, User.username)
        .join(User, col(User.id) == col(Job.user_id))
        .where(Job.status == JobStatus.processing, col(Job.worker).in_(names))
        .order_by(col(Job.started_at), col(Job.id))
    ).all()
    batches: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    for job, username in rows:
        batches[job.worker].append(
            {
                "job": job.id,
                "user": username,
                "style": job.style or "own settings",
                "model": job.model,
                "step": f"{job.progress_step}/{job.progress_total}" if job.progress_total else None,  # None: starting
            }
        )
    return batches


def memory_summary(state: WorkerState) -> dict[str, str]:
    """What a worker's models take against its budget, for the Models page's table ("—" before it loaded any)."""
    memory = state.row.memory
    if memory is None:
        return {"model memory": "—", "budget": "—"}
    percent = 100 * memory["used_bytes"] / memory["budget_bytes"] if memory["budget_bytes"] else 0.0
    return {
        "model memory": f"{format_bytes(memory['used_bytes'])} ({percent:.0f} %)",
        "budget": format_bytes(memory["budget_bytes"]),
    }


def loaded_model_rows(state: WorkerState) -> list[dict[str, object]]:
    """One row per model the worker has loaded, least recently used first (the next to be evicted)."""
    memory = state.row.memory or {}
    return [
        {
            "model": model["name"],
            "family": model["family"],
            "loaded as": model["kind"],
            "size": format_bytes(model["bytes"]),
            "on the device": format_bytes(model["device_bytes"]),
            "dtype": model["dtype"],
            "offload": model["offload"]
            + (f" (asked: {model['offload_requested']})" if model["offload_requested"] != model["offload"] else ""),
            "in use": model["in_use"],
        }
        for model in memory.get("models", [])
    ]


def format_bytes(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
