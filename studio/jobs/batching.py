"""Which queued jobs may share one batched denoising loop (pipelines.batch), and so be claimed together.

Torch-free: the claim decides from the job rows and their sources' sizes. Jobs share a loop when they run the
same model (so the same family and scheduler) with the same offload, are plain image-to-image runs (no mask,
ControlNet, sweep, reference images, IP-Adapter or LoRAs) of the same step count, and render at the same output
size. Prompts, sources, strengths, seeds, guidance and users may differ.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session

from pipelines import model_stack_ready
from pipelines.errors import PipelineInputError
from pipelines.families import get_family
from pipelines.params import RunSpec, Task
from pipelines.registry import resolve_model
from studio.config import Settings
from studio.db.tables import Asset, Job

BatchKey = tuple


def batch_key(job: Job, source: Asset | None, *, max_side: int, models_dir: Path) -> BatchKey | None:
    """What a job must have in common with another to share its loop; None: it runs on its own."""
    if job.sweep_id is not None or job.task != Task.img2img or job.mask_asset_id is not None or source is None:
        return None
    try:
        spec = RunSpec.from_dict(job.params)
        offload = job.params.get("offload", "none")
        ref = resolve_model(job.model, models_dir=models_dir, family=job.params.get("family"), offload=offload)
        family = get_family(ref.family, model=ref.name)
    except (PipelineInputError, KeyError, TypeError, ValueError):
        return None  # a job its run will refuse: alone, so its message is its own
    # LoRAs and an IP-Adapter are attached to the whole pipeline a loop runs on (pipelines.adapters): such a job
    # runs alone.
    if spec.control is not None or any(job.params.get(key) for key in ("references", "loras", "reference")):
        return None
    size = family.output_size(source.width, source.height, max_side)
    return (ref.name, ref.family, offload, spec.params.steps, size)


def claim_key(*, session: Session, settings: Settings) -> Callable[[Job], BatchKey | None]:
    """batch_key for studio.jobs.leases.claim_batch, reading each job's source in the claim's transaction."""

    def key(job: Job) -> BatchKey | None:
        source = session.get(Asset, job.source_asset_id) if job.source_asset_id is not None else None
        return batch_key(job, source, max_side=settings.max_output_side, models_dir=settings.models_dir)

    return key


def batch_limit(settings: Settings, key: BatchKey) -> tuple[int, str]:
    """(the most jobs of `key`'s kind one loop takes, why): STUDIO_BATCH_MAX when set; unset, 1 on a CPU and on a GPU
    as many as its free memory holds at the model's measured footprint (pipelines.footprint.chosen_batch_max).

    Reads the footprint only once a job has loaded the model stack (so an idle worker never imports torch for a
    claim); before that no footprint exists yet anyway, and the first job runs alone."""
    if settings.batch_max is not None:
        return settings.batch_max, "STUDIO_BATCH_MAX"
    if not model_stack_ready() or "pipelines.footprint" not in sys.modules:
        return 1, "one at a time until a run has loaded the model stack"
    model, _family, _offload, _steps, (width, height) = key
    return sys.modules["pipelines.footprint"].chosen_batch_max(model, width * height)
