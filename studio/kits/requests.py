"""The request a brand kit makes: the kit as the form's style (its template, negative prompt and defaults on its
catalogue model) and its LoRAs at their weights, each still hashing to what the kit pinned.

`kit_request_fields` is the one place a kit's settings become request options, its reference image included.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipelines.params import ControlParams, Img2ImgParams, InpaintParams, OutpaintParams, Task
from studio.billing.pricing import Quality
from studio.catalogue.references import ReferenceImage
from studio.catalogue.requests import JobRequest, styled_request
from studio.catalogue.styles import Catalogue, Style
from studio.config import Settings
from studio.db.tables import BrandKit
from studio.errors import Refused
from studio.kits.settings import KitSettings

KIT_STYLE_PREFIX = "kit:"  # a kit's id in the style picker, beside the catalogue's style ids


@dataclass(frozen=True)
class KitStyle(Style):
    """A brand kit as the run form's style; `brand_kit` is the kit's row as it was read (always set)."""

    brand_kit: BrandKit | None = None


def kit_style_id(kit_id: int) -> str:
    return f"{KIT_STYLE_PREFIX}{kit_id}"


def kit_style(kit: BrandKit, catalogue: Catalogue) -> KitStyle:
    """The kit as the run form's style: its model, template, negative prompt and defaults (its quality first)."""
    settings = KitSettings.from_dict(kit.settings)
    entry = catalogue.models.get(settings.model)
    if entry is None:
        raise Refused(f"The brand kit {kit.name!r} runs the model {settings.model!r}, which the catalogue lacks now.")
    return KitStyle(
        id=kit_style_id(kit.id),
        name=kit.name,
        description="Your team's brand kit",
        task=Task.img2img,
        model=settings.model,
        prompt=settings.prompt_template,
        negative_prompt=settings.negative_prompt,
        strength=settings.strength,
        guidance=settings.guidance,
        qualities=(settings.quality, *(quality for quality in Quality if quality is not settings.quality)),
        credits=entry.credits,
        family=entry.family,
        steps=settings.steps,
        brand_kit=kit,
    )


def kit_request_fields(kit: KitSettings, reference: ReferenceImage | None = None) -> dict[str, Any]:
    """The request options a kit adds to its style: its LoRAs and its reference image. A member's own `reference`
    runs only with a kit that has none: the kit's image is part of its look."""
    if kit.reference is not None and reference is not None:
        raise Refused(
            "This brand kit brings its own reference image: remove yours to run the kit (nothing was charged)."
        )
    if kit.reference is not None:
        reference = ReferenceImage(image_sha256=kit.reference.image_sha256, scale=kit.reference.scale)
    return {"loras": tuple((lora.name, lora.weight) for lora in kit.loras), "reference": reference}


def kit_request(
    *,
    settings: Settings,
    catalogue: Catalogue,
    kit: BrandKit,
    params: Img2ImgParams,
    quality: Quality,
    inpaint: InpaintParams | None = None,
    control: ControlParams | None = None,
    outpaint: OutpaintParams | None = None,
    reference: ReferenceImage | None = None,
) -> JobRequest:
    """The kit's request (params hold the member's own prompt and negative prompt, the settings they chose and, with a
    kit that has none, their own `reference` image); Refused when a LoRA's file no longer hashes to what the kit
    pinned."""
    pinned = KitSettings.from_dict(kit.settings)
    request = styled_request(
        settings=settings,
        catalogue=catalogue,
        style=kit_style(kit, catalogue),
        params=params,
        quality=quality,
        inpaint=inpaint,
        control=control,
        outpaint=outpaint,
        **kit_request_fields(pinned, reference),
    )
    for lora, ran in zip(pinned.loras, request.loras, strict=True):
        if ran.sha256 != lora.sha256:
            raise Refused(
                f"The brand kit {kit.name!r} pinned its LoRA {lora.name!r} at SHA-256 {lora.sha256[:12]}…, and its "
                f"file is {ran.sha256[:12]}… now, so results would not match the kit. Nothing was charged; ask an "
                "admin to save the kit again to accept the new file."
            )
    return replace(request, style=None, kit_id=kit.id, kit_name=kit.name, kit_saved_at=kit.updated_at.isoformat())
