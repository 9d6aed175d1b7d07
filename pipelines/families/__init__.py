"""Model families: which pipelines run a model, its sizes, defaults and recipe (pipelines.families.base.Family).

Torch-free. Each family is one module declaring FAMILY; adding a family is a new module registered in FAMILIES
below (and the tiny builders its previews name, in pipelines.tiny). A ModelRef names its family
(pipelines.registry.resolve_model); every task looks its pipelines up here.
"""

from __future__ import annotations

from pipelines.errors import PipelineInputError
from pipelines.families import flux, flux_kontext, qwen_image_edit, sd15, sd21, sdxl
from pipelines.families.base import BASE, CONTROLNET, INPAINTING, Defaults, Family, Pipelines, Preview

__all__ = [
    "BASE",
    "CONTROLNET",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "INPAINTING",
    "Defaults",
    "Family",
    "Pipelines",
    "Preview",
    "get_family",
    "preview_family",
]

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        sd15.FAMILY,
        sd21.FAMILY,
        sdxl.FAMILY,
        flux.FAMILY,
        flux_kontext.FAMILY,
        qwen_image_edit.FAMILY,
        qwen_image_edit.PLUS_FAMILY,
    )
}
# The family of a model configured without one (STUDIO_MODEL, the studio's first family).
DEFAULT_FAMILY = sd15.FAMILY.name


def get_family(name: str, *, model: str = "") -> Family:
    """The family called `name`; a PipelineInputError naming the model and the known families otherwise."""
    family = FAMILIES.get(name)
    if family is None:
        subject = f"Model '{model}' belongs to" if model else "Asked for"
        raise PipelineInputError(
            f"{subject} the unknown model family {name!r}; the known families are {', '.join(FAMILIES)}."
        )
    return family


def preview_family(name: str) -> Family | None:
    """The family whose tiny offline model is called `name` (None for other names, e.g. the upscalers)."""
    return next((family for family in FAMILIES.values() if any(p.name == name for p in family.previews)), None)
