"""What a brand kit holds, checked against the catalogue and the studio's limits: a catalogue model, LoRAs pinned by
the SHA-256 of their file when the kit was saved, an optional reference image (an asset's sha256) with a scale, a
prompt template with one `{prompt}`, a negative prompt, and the form's defaults (strength, guidance, quality, steps).
Torch-free; a bad value is refused with a message naming it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipelines.errors import PipelineInputError
from pipelines.params import LIMITS, MAX_LORAS, MAX_PROMPT_CHARS, check_limit
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.styles import Catalogue, ModelKind
from studio.errors import Refused

PLACEHOLDER = "{prompt}"
# The reference image's scale: the studio's one limit for an IP-Adapter's scale, as members' own references have.
REFERENCE_SCALE = LIMITS["ip_adapter_scale"]


@dataclass(frozen=True)
class KitLora:
    name: str  # a catalogue [loras] entry
    weight: float
    sha256: str  # its file's hash when the kit was saved: a file that changed since is refused


@dataclass(frozen=True)
class KitReference:
    image_sha256: str  # the reference image, stored as an asset (studio.media.storage)
    scale: float


@dataclass(frozen=True)
class KitSettings:
    model: str  # a catalogue [models] entry that runs image-to-image
    prompt_template: str  # the user's words go where `{prompt}` is
    negative_prompt: str
    strength: float
    guidance: float
    quality: Quality
    steps: int
    loras: tuple[KitLora, ...] = ()
    reference: KitReference | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"quality": self.quality.value, "loras": [asdict(lora) for lora in self.loras]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KitSettings:
        reference = data.get("reference")
        return cls(
            **{key: value for key, value in data.items() if key not in ("quality", "loras", "reference")},
            quality=Quality(data["quality"]),
            loras=tuple(KitLora(**lora) for lora in data.get("loras", [])),
            reference=KitReference(**reference) if reference is not None else None,
        )

    def check(self, catalogue: Catalogue) -> None:
        """Refuse, saying why, a kit the catalogue or the studio's limits cannot run."""
        entry = catalogue.models.get(self.model)
        if entry is None or entry.kind is not ModelKind.sd:
            raise Refused(f"A brand kit runs a catalogue model; there is no image model {self.model!r}.")
        family = entry.family_info
        if family.pipelines.img2img is None:
            raise Refused(f"{self.model!r} ({family.label}) does not transform images, so a kit cannot run it.")
        template = self.prompt_template
        if (
            template.count(PLACEHOLDER) != 1
            or "{" in template.replace(PLACEHOLDER, "")
            or "}" in template.replace(PLACEHOLDER, "")
        ):
            raise Refused(
                f"The prompt template needs {PLACEHOLDER} exactly once (where the member's words go) and no other "
                f"braces; got {template!r}."
            )
        for what, text in (("prompt template", template), ("negative prompt", self.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise Refused(f"The {what} is limited to {MAX_PROMPT_CHARS} characters; it has {len(text)}.")
        if self.negative_prompt.strip() and not family.negative_prompt:
            raise Refused(f"{family.label} models take no negative prompt: leave it empty for {self.model!r}.")
        tier = QUALITY_TIERS[self.quality]
        if not 1 <= self.steps <= tier.max_steps:
            raise Refused(f"{tier.label} quality takes 1 to {tier.max_steps} steps, not {self.steps}.")
        if len(self.loras) > MAX_LORAS:
            raise Refused(f"A kit takes at most {MAX_LORAS} LoRAs; this one has {len(self.loras)}.")
        if len({lora.name for lora in self.loras}) != len(self.loras):
            raise Refused("Each LoRA goes into a kit once.")
        try:
            check_limit("strength", self.strength, "Strength")
            check_limit("guidance", self.guidance, "Guidance")
            for lora in self.loras:
                check_limit("lora_weight", lora.weight, f"The weight of LoRA '{lora.name}'")
        except PipelineInputError as exc:
            raise Refused(str(exc)) from exc
        for lora in self.loras:
            lora_entry = catalogue.loras.get(lora.name)
            if lora_entry is None:
                raise Refused(f"There is no LoRA {lora.name!r} in the catalogue.")
            if lora_entry.family != entry.family:
                raise Refused(
                    f"The LoRA {lora.name!r} is for {lora_entry.family_info.label} models, and {self.model!r} is a "
                    f"{family.label} model."
                )
        if self.reference is not None and not REFERENCE_SCALE[0] <= self.reference.scale <= REFERENCE_SCALE[1]:
            low, high = REFERENCE_SCALE
            raise Refused(f"The reference image's scale is {low:g} to {high:g}, not {self.reference.scale:g}.")
