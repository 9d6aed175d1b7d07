"""What the run form (Transform, Inpaint, Sweep, Batch) holds, and loading it from elsewhere.

A result's recipe (*Load its settings*), a History *Remix*, a sweep cell's *Use this one* and a preset's
*Apply* all put settings into a form. `FormSettings` is that one shape; `check` refuses, with a message,
settings that a page cannot show (a style it does not offer, a quality tier the style lacks, a value
outside the studio's limits), so loading either fills the whole form or changes nothing. Torch-free and
Streamlit-free: studio.web.recipes writes these values into the widgets.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from pipelines.errors import PipelineInputError
from pipelines.params import (
    DEFAULT_NOISE_LEVEL,
    MAX_LORAS,
    ControlParams,
    Img2ImgParams,
    InpaintParams,
    OutpaintParams,
    RunSpec,
    Task,
    check_limit,
)
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.loras import recipe_lora_choices
from studio.catalogue.presets import PresetSettings
from studio.catalogue.references import ReferenceImage, recipe_reference_choice
from studio.catalogue.requests import read_recipe_spec, recipe_text
from studio.catalogue.styles import Catalogue, Style
from studio.errors import Refused
from studio.kits.requests import kit_style_id

CANNOT_LOAD = "These settings cannot be loaded"


@dataclass(frozen=True)
class FormSettings:
    style: str | None  # a catalogue style id; None: "your own prompt and settings"
    prompt: str  # what the user writes (a style adds its template when the job is built)
    negative_prompt: str
    strength: float
    quality: Quality
    steps: int
    guidance: float
    seed: int
    noise_level: int = DEFAULT_NOISE_LEVEL
    control: ControlParams | None = None  # its `model` is left empty: the catalogue names it per guide
    inpaint: InpaintParams | None = None  # None: the form's own mask options stay as they are
    outpaint: OutpaintParams | None = None  # the format (Expand); None: the form's own stays as it is
    loras: tuple[tuple[str, float], ...] = ()  # catalogue LoRAs by name, with their weights
    reference: ReferenceImage | None = None  # an image an IP-Adapter reads (Transform and Inpaint)

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any], catalogue: Catalogue) -> FormSettings:
        """A recipe (or a job's params: the same keys) as form settings; Refused if it is unreadable.

        With a style that is still in the catalogue, the form gets what the user wrote (the style adds its
        template again); otherwise it gets the final prompt, so the look is kept.
        """
        spec, quality = read_recipe_spec(recipe, refusal=CANNOT_LOAD)
        style_id = recipe.get("style")
        style = catalogue.styles.get(style_id) if isinstance(style_id, str) else None
        prompt, negative = spec.params.prompt, spec.params.negative_prompt
        if style is not None:
            prompt = recipe_text(recipe, "user_prompt", prompt, refusal=CANNOT_LOAD)
            negative = recipe_text(recipe, "user_negative_prompt", negative, refusal=CANNOT_LOAD)
        params = spec.params
        return cls(
            style=style.id if style is not None else None,
            prompt=prompt,
            negative_prompt=negative,
            strength=params.strength,
            quality=quality,
            steps=params.steps,
            guidance=params.guidance,
            seed=params.seed,
            noise_level=spec.noise_level,
            control=replace(spec.control, model="") if spec.control is not None else None,
            inpaint=spec.inpaint,
            outpaint=spec.outpaint,
            loras=tuple((name, weight) for name, weight, _ in recipe_lora_choices(recipe, refusal=CANNOT_LOAD)),
            reference=recipe_reference_choice(recipe, refusal=CANNOT_LOAD),
        )

    @classmethod
    def from_preset(cls, preset: PresetSettings) -> FormSettings:
        # A preset holds every setting of the form but mask options, the format and a reference image (it also pins the
        # model, the LoRAs' hashes and a seed policy); a kit's preset chooses the kit, which brings its LoRAs.
        options = ("style", "control", "inpaint", "outpaint", "loras", "reference")
        same = {field.name: getattr(preset, field.name) for field in fields(cls) if field.name not in options}
        style = kit_style_id(preset.kit) if preset.kit is not None else preset.style
        return cls(**same, style=style, control=preset.control_params(), loras=preset.lora_choices())

    def check(self, catalogue: Catalogue, offered: list[Style]) -> None:
        """Refuse settings the page (which offers the styles `offered`) cannot show, saying why."""
        style = next((style for style in offered if style.id == self.style), None)  # a team's kit is offered too
        if self.style is not None and style is None:
            known = catalogue.styles.get(self.style)
            name = known.name if known is not None else repr(self.style)
            raise Refused(f"The style {name} is not offered on this page, so these settings cannot be loaded.")
        if style is not None and self.quality not in style.qualities:
            offered_tiers = ", ".join(QUALITY_TIERS[q].label for q in style.qualities)
            raise Refused(
                f"{style.name} is offered in {offered_tiers} quality, not {QUALITY_TIERS[self.quality].label}, "
                "so these settings cannot be loaded."
            )
        tier = QUALITY_TIERS[self.quality]
        if self.steps > tier.max_steps:
            raise Refused(f"{tier.label} quality covers up to {tier.max_steps} steps, not {self.steps}.")
        params = Img2ImgParams(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            strength=self.strength,
            steps=self.steps,
            guidance=self.guidance,
            seed=self.seed,
        )
        # Every value against the studio's limits (the task only decides which options may be present).
        task = Task.inpaint if self.inpaint is not None else Task.img2img
        spec = RunSpec(task, params, self.control, self.inpaint, self.noise_level, self.outpaint)
        try:
            spec.check_ranges()
            self._check_loras(catalogue, style)
            if self.reference is not None:
                check_limit("ip_adapter_scale", self.reference.scale, "The reference image's scale")
        except PipelineInputError as exc:
            raise Refused(f"{CANNOT_LOAD}: {exc}") from exc

    def _check_loras(self, catalogue: Catalogue, style: Style | None) -> None:
        """Each LoRA still registered and made for the style's family, at most MAX_LORAS, weights within LIMITS (the
        configured model's family, with no style, is checked when the job is built)."""
        if len(self.loras) > MAX_LORAS:
            raise PipelineInputError(f"a run takes at most {MAX_LORAS} LoRAs, these settings have {len(self.loras)}.")
        for name, weight in self.loras:
            entry = catalogue.loras.get(name)
            if entry is None:
                raise PipelineInputError(f"the LoRA {name!r} is not in the catalogue any more.")
            if style is not None and entry.family != style.family:
                raise PipelineInputError(
                    f"the LoRA {name!r} is for {entry.family} models, and {style.name} runs a {style.family} model."
                )
            check_limit("lora_weight", weight, f"The weight of LoRA '{name}'")
