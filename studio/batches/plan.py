"""One request per image of a batch (a new seed each, with the random seed policy), and what it costs."""

from __future__ import annotations

import random
from dataclasses import replace

from pipelines.params import MAX_SEED
from studio.catalogue.presets import SeedPolicy
from studio.catalogue.requests import JobRequest
from studio.config import Settings
from studio.errors import Refused
from studio.jobs.submit import quote
from studio.media.staging import StagedImage


def batch_requests(request: JobRequest, count: int, *, seed_policy: SeedPolicy, rng: random.Random) -> list[JobRequest]:
    """One request per image: the same recipe; with the random seed policy, a new seed for each image."""
    if seed_policy is SeedPolicy.fixed:
        return [request] * count
    return [
        replace(request, spec=replace(request.spec, params=replace(request.spec.params, seed=rng.randint(0, MAX_SEED))))
        for _ in range(count)
    ]


def batch_cost(*, settings: Settings, images: list[StagedImage], requests: list[JobRequest]) -> int:
    """What the whole batch costs: each image priced at its own size (expanded: at its canvas's). Refused, naming
    the image, when one cannot expand to the batch's format."""
    total = 0
    for request, image in zip(requests, images, strict=True):
        try:
            total += quote(settings=settings, request=request, width=image.width, height=image.height).credits
        except Refused as exc:
            raise Refused(f"{image.name}: {exc}") from exc
    return total
