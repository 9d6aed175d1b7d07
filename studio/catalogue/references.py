"""Reference images that steer a run through the catalogue's IP-Adapter of the model's family (`ReferenceImage`:
which stored image, at what scale), and what a job and a recipe keep of one.

The image itself is stored as an asset (studio.jobs.submit) and named by the sha256 of its PNG; the IP-Adapter is
the catalogue's `[ip_adapters.*]` entry of the family, recorded by name and by the SHA-256 of its weights file and
of its image encoder, so a re-run is refused once either changed. In preview mode each family's adapter runs as its
tiny offline one (pipelines.ip_adapters.PREVIEW_IP_ADAPTERS), built on first use. A reference does not change the
price: the image encoder runs once per job, a small fraction of one denoising step, and the adapter adds four tokens
to each cross-attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.families import FAMILIES
from pipelines.ip_adapters import (
    ENCODER_WEIGHTS,
    PREVIEW_ENCODER,
    PREVIEW_WEIGHTS,
    IpAdapterRef,
    adapter_files,
    check_ip_adapter,
    ensure_preview_ip_adapter,
    refuse_family,
)
from studio.catalogue.loras import cached_sha256
from studio.catalogue.styles import Catalogue, IpAdapterEntry
from studio.config import Settings
from studio.errors import Refused


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image a run follows: the sha256 of its stored PNG, and how strongly (LIMITS["ip_adapter_scale"])."""

    image_sha256: str
    scale: float


def ip_adapter_ref(
    catalogue: Catalogue | None, reference: ReferenceImage, *, family: str, model: str, settings: Settings
) -> IpAdapterRef:
    """The IP-Adapter that reads `reference` on a model of `family`, at its scale, with its files' hashes now.
    Refused for a family without one, a scale out of range, or files that are missing or changed."""
    if not _is_sha256(reference.image_sha256):
        raise Refused(f"A reference image is named by the sha256 of its PNG, got {reference.image_sha256!r}.")
    try:
        refuse_family(family, model=model)
    except PipelineInputError as exc:
        raise Refused(str(exc)) from exc
    entry = catalogue.ip_adapter_for(family) if catalogue is not None else None
    if entry is None:
        raise Refused(
            f"This studio has no IP-Adapter for {FAMILIES[family].label} models, so model '{model}' takes no reference "
            "image. Ask an admin to add one to the style catalogue ([ip_adapters])."
        )
    adapter = _adapter(entry, settings, scale=reference.scale)
    try:
        check_ip_adapter(adapter, family=family, model=model)
    except PipelineInputError as exc:
        raise Refused(str(exc)) from exc
    return adapter


def _adapter(entry: IpAdapterEntry, settings: Settings, *, scale: float) -> IpAdapterRef:
    try:
        if settings.uses_preview_model:
            folder = ensure_preview_ip_adapter(settings.models_dir, entry.family)  # imports torch only to build it
            weights, encoder = adapter_files(str(folder), PREVIEW_WEIGHTS, PREVIEW_ENCODER, name=entry.name)
        else:
            weights, encoder = adapter_files(entry.location, entry.weight_name, entry.image_encoder, name=entry.name)
    except ModelUnavailableError as exc:
        raise Refused(f"IP-Adapter '{entry.name}' is not available here: {exc}") from exc
    sha256, encoder_sha256 = cached_sha256(weights), cached_sha256(encoder / ENCODER_WEIGHTS)
    for found, pinned, what in (
        (sha256, entry.sha256, "weights file"),
        (encoder_sha256, entry.encoder_sha256, "image encoder"),
    ):
        if pinned and found != pinned and not settings.uses_preview_model:
            raise Refused(
                f"IP-Adapter '{entry.name}' changed: its {what} no longer has the SHA-256 the catalogue records "
                f"({pinned[:12]}…). Ask an admin to check it and record the new hash."
            )
    return IpAdapterRef(entry.name, str(weights), str(encoder), entry.family, sha256, encoder_sha256, scale)


def reference_job_params(reference: ReferenceImage, adapter: IpAdapterRef) -> dict[str, Any]:
    """A reference as `Job.params` keeps it: what the recipe records (reference_recipe) plus the files the worker
    loads."""
    return {
        "sha256": reference.image_sha256,
        "scale": reference.scale,
        "ip_adapter": adapter.name,
        "ip_adapter_sha256": adapter.sha256,
        "image_encoder_sha256": adapter.encoder_sha256,
        "weights": adapter.weights,
        "image_encoder": adapter.image_encoder,
    }


def reference_recipe(params: dict[str, Any]) -> dict[str, Any] | None:
    """What a recipe records of a job's reference (None without one): the image by sha256, the scale, the IP-Adapter
    by catalogue name and the hashes of its files, never their paths."""
    reference = params.get("reference")
    if not reference:
        return None
    keys = ("sha256", "scale", "ip_adapter", "ip_adapter_sha256", "image_encoder_sha256")
    return {key: reference[key] for key in keys}


def job_ip_adapter(params: dict[str, Any], family: str) -> IpAdapterRef | None:
    """The IP-Adapter a job's params name (reference_job_params), as pipelines take it."""
    reference = params.get("reference")
    if not reference:
        return None
    return IpAdapterRef(
        reference["ip_adapter"],
        reference["weights"],
        reference["image_encoder"],
        family,
        reference["ip_adapter_sha256"],
        reference["image_encoder_sha256"],
        reference["scale"],
    )


def recipe_reference(
    catalogue: Catalogue, recipe: dict[str, Any], settings: Settings, *, family: str, model: str, refusal: str
) -> tuple[ReferenceImage, IpAdapterRef] | None:
    """A recipe's reference (recipes before version 7 have none) with the catalogue's IP-Adapter today, which must be
    the one that ran: same name, same hashes (else another picture would come out). Refused("<refusal>: why")."""
    reference = recipe_reference_choice(recipe, refusal=refusal)
    if reference is None:
        return None
    recorded = recipe["reference"]
    adapter = ip_adapter_ref(catalogue, reference, family=family, model=model, settings=settings)
    then = (recorded.get("ip_adapter"), recorded.get("ip_adapter_sha256"), recorded.get("image_encoder_sha256"))
    if then != (adapter.name, adapter.sha256, adapter.encoder_sha256):
        raise Refused(
            f"{refusal}: the IP-Adapter that read its reference image ({then[0]!r}) is not the one this studio runs "
            f"now ({adapter.name!r}, or its files changed), so it would not give the same picture. Nothing was charged."
        )
    return reference, adapter


def recipe_reference_choice(recipe: dict[str, Any], *, refusal: str) -> ReferenceImage | None:
    """A recipe's `reference` ({sha256, scale, …}) as the ReferenceImage a form shows, type-checked (Refused: why)."""
    recorded = recipe.get("reference")
    if recorded is None:
        return None
    if not isinstance(recorded, dict):
        raise Refused(f"{refusal}: reference should be a table, got {recorded!r}.")
    sha256, scale = recorded.get("sha256"), recorded.get("scale")
    if not _is_sha256(sha256) or not isinstance(scale, int | float) or isinstance(scale, bool):
        raise Refused(f"{refusal}: its reference needs an image sha256 and a numeric scale, got {recorded!r}.")
    return ReferenceImage(sha256, float(scale))


def _is_sha256(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)
