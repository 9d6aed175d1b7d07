"""What a user asks the studio to run, before it is priced and queued: a `JobRequest`.

A request is built from a catalogue style (its model, prompt template and negative prompt), from the
user's own settings on the configured model, or from a result's recipe (an exact re-run). Building one
resolves every model to what the worker will load and refuses what cannot run here, with a message that
says why; nothing is stored or charged until `studio.jobs.submit.submit_job`. The price follows the model that
runs: its catalogue entry's credits, or the configured model's (STUDIO_MODEL_COST).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipelines.errors import PipelineInputError
from pipelines.families import DEFAULT_FAMILY, FAMILIES, preview_family
from pipelines.ip_adapters import IpAdapterRef
from pipelines.loras import LoraRef, check_loras
from pipelines.outpaint import canvas_size
from pipelines.params import (
    MAX_PROMPT_CHARS,
    ControlParams,
    Img2ImgParams,
    InpaintParams,
    OutpaintParams,
    RunSpec,
    Task,
)
from studio.billing.pricing import QUALITY_TIERS, Quality, configured_model_credits
from studio.catalogue.loras import lora_ref, recipe_loras
from studio.catalogue.references import ReferenceImage, ip_adapter_ref, recipe_reference, reference_job_params
from studio.catalogue.styles import STUDIO_TASKS, Catalogue, CatalogueError, ModelEntry, ModelKind, Style
from studio.config import Settings
from studio.errors import Refused

CANNOT_RERUN = "This file's recipe cannot be re-run"


@dataclass(frozen=True)
class JobRequest:
    spec: RunSpec  # what runs: the final prompts (style template applied) and the ControlNet's location
    model: str  # what the worker loads: a preview model name, a hub id or a folder
    quality: Quality
    # The running model's price per run, before the quality and high-resolution multipliers
    # (studio.billing.pricing): its catalogue entry's credits, or the configured model's. Never a style's label.
    base_credits: int
    catalogue_model: str | None = None  # the [models] entry that runs; None: the configured model (STUDIO_MODEL)
    family: str = DEFAULT_FAMILY  # the model's family (pipelines.families): which pipelines the worker runs
    offload: str = "none"  # the catalogue model's CPU offload (pipelines.registry.OFFLOAD_MODES)
    style: str | None = None  # the catalogue style, None for the user's own settings
    user_prompt: str = ""  # what the user wrote, before the style's template
    user_negative_prompt: str = ""
    # An edit's reference images (Qwen-Image-Edit Plus: a background or style reference), by the sha256 of their
    # PNG; submit_job stores them as the user's assets.
    references: tuple[str, ...] = ()
    # LoRAs applied on the model at their weights, with the hash of the file they run from (studio.catalogue.loras).
    loras: tuple[LoraRef, ...] = ()
    # A reference image (by the sha256 of its PNG, stored as the user's asset by submit_job) and the IP-Adapter that
    # reads it at the reference's scale (studio.catalogue.references); both or neither.
    reference: ReferenceImage | None = None
    ip_adapter: IpAdapterRef | None = None
    # The team's brand kit the request was made from (studio.kits), by id and name, and when the kit was last saved
    # (a submit refuses a kit changed since); None: no kit.
    kit_id: int | None = None
    kit_name: str = ""
    kit_saved_at: str = ""

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def takes_mask(self) -> bool:
        """Whether the user gives a mask: inpainting does, except expanding to a format (its canvas makes one)."""
        return self.task == Task.inpaint and self.spec.outpaint is None

    @property
    def denoising_steps(self) -> int:
        """The steps the run takes, by its model's family (FLUX rounds up where Stable Diffusion rounds down)."""
        return denoising_steps(self.spec, self.family)

    def check(self) -> None:
        """The checks that need no catalogue: parameters in range, the family's own rules (its step count for the
        strength, no negative prompt for FLUX.1, no soft masks where it has none), an edit's instruction, steps
        within the quality tier."""
        try:
            self.spec.check_ranges()
            if self.task.upscale_factor is None:
                self._check_family()
        except PipelineInputError as exc:
            raise Refused(str(exc)) from exc
        tier = QUALITY_TIERS[self.quality]
        if self.spec.params.steps > tier.max_steps:
            raise Refused(
                f"{tier.label} quality covers up to {tier.max_steps} steps; "
                f"{self.spec.params.steps} steps need a higher tier."
            )

    def _check_family(self) -> None:
        params, family = self.spec.params, FAMILIES[self.family]
        if self.task == Task.edit:
            if not self.user_prompt.strip():
                raise PipelineInputError("Write an instruction: say what to change (and what to keep).")
            if len(self.user_prompt) > MAX_PROMPT_CHARS:
                raise PipelineInputError(f"Instructions are limited to {MAX_PROMPT_CHARS} characters.")
            if len(self.references) > family.max_images - 1:
                takes = "no reference images" if family.max_images == 1 else f"up to {family.max_images - 1}"
                raise PipelineInputError(
                    f"{family.label} takes {takes} reference images; this edit has {len(self.references)}."
                )
        elif self.references:
            raise PipelineInputError("Reference images go with an edit.")
        if self.loras and (self.task not in (Task.img2img, Task.inpaint, Task.edit) or self.spec.outpaint is not None):
            what = "expanding to a format" if self.spec.outpaint is not None else self.task.label
            raise PipelineInputError(f"LoRAs apply to image-to-image, inpainting and edits, not {what}.")
        check_loras(self.loras, family=self.family, model=self.catalogue_model or self.model)
        if self.reference is not None and (self.task not in (Task.img2img, Task.inpaint) or self.spec.outpaint):
            what = "expanding to a format" if self.spec.outpaint is not None else self.task.label
            raise PipelineInputError(f"A reference image steers image-to-image and inpainting runs, not {what}.")
        params.check(uses_strength=False)  # the prompt and its length; the step count by the family, below
        family.check_params(params, model=self.catalogue_model or self.model)
        if self.denoising_steps < 1:
            raise PipelineInputError(
                f"Strength {params.strength} with {params.steps} steps runs no denoising step on a {family.label} "
                "model; raise the strength or the steps."
            )
        if self.spec.inpaint is not None and self.spec.inpaint.soft and not family.soft_inpainting:
            raise PipelineInputError(
                f"{family.label} models do not take soft (per-pixel strength) masks: paint the mask in black and white."
            )

    def check_source(self, width: int, height: int) -> None:
        """Refuse a width×height source smaller than the model's family takes (SDXL: 512 px per side), or one that
        cannot expand to the requested format."""
        if self.task.upscale_factor is not None:
            return  # the upscalers belong to no family; their own size limits are checked at submit
        try:
            FAMILIES[self.family].check_source(width, height, model=self.catalogue_model or self.model)
        except PipelineInputError as exc:
            raise Refused(f"{exc} Nothing was charged.") from exc
        self.canvas_size(width, height)

    def canvas_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the image a width×height source becomes before rendering: the canvas when expanding to a
        format (pipelines.outpaint), else the source's own. Refused when the format cannot hold the source."""
        if self.spec.outpaint is None:
            return width, height
        try:
            return canvas_size(width, height, self.spec.outpaint)
        except PipelineInputError as exc:
            raise Refused(f"{exc} Nothing was charged.") from exc

    def kit_params(self) -> dict[str, Any]:
        """The brand kit as `Job.params` and the recipe keep it: id, name and when it was saved."""
        return {"id": self.kit_id, "name": self.kit_name, "saved_at": self.kit_saved_at}

    def job_params(self) -> dict[str, Any]:
        """What `Job.params` stores: the run spec plus the user's own words and what the worker loads it as."""
        return (
            self.spec.to_dict()
            | {
                "user_prompt": self.user_prompt,
                "user_negative_prompt": self.user_negative_prompt,
                "catalogue_model": self.catalogue_model,
                "family": self.family,
                "offload": self.offload,
            }
            | ({"references": list(self.references)} if self.references else {})
            | ({"loras": [lora_job_params(lora) for lora in self.loras]} if self.loras else {})
            | ({"reference": reference_job_params(self.reference, self.ip_adapter)} if self.reference else {})
            | ({"kit": self.kit_params()} if self.kit_id is not None else {})
        )


def lora_job_params(lora: LoraRef) -> dict[str, Any]:
    """A LoRA as `Job.params` keeps it: the recipe's name, sha256 and weight, plus the file the worker loads."""
    return {"name": lora.name, "sha256": lora.sha256, "weight": lora.weight, "location": lora.location}


def job_loras(params: dict[str, Any], family: str | None) -> tuple[LoraRef, ...]:
    """The LoRAs a job's params name (lora_job_params), as pipelines.img2img takes them."""
    return tuple(
        LoraRef(item["name"], item["location"], family or DEFAULT_FAMILY, item["sha256"], item["weight"])
        for item in params.get("loras", [])
    )


def resolve_loras(
    catalogue: Catalogue | None, loras: Sequence[tuple[str, float]], settings: Settings
) -> tuple[LoraRef, ...]:
    """(name, weight) pairs a user chose, as the catalogue's LoRAs with the hash of their file now."""
    if loras and catalogue is None:
        raise Refused("LoRAs come from the style catalogue, which is not loaded.")
    return tuple(lora_ref(catalogue, name, weight, settings) for name, weight in loras)


def denoising_steps(spec: RunSpec, family: str | None) -> int:
    """The denoising steps a run of `spec` on a model of `family` (None: the default) takes: every step when
    upscaling or editing, else the family's count for the strength (pipelines.families.base.Family.denoising_steps).
    """
    if spec.task.upscale_factor is not None:
        return spec.params.steps
    return FAMILIES[family or DEFAULT_FAMILY].denoising_steps(spec.params.steps, spec.params.strength)


def configured_family(settings: Settings) -> str:
    """The family of the configured model (STUDIO_MODEL): a preview model's own, else the default family."""
    family = preview_family(settings.model)
    return family.name if family is not None else DEFAULT_FAMILY


def custom_request(
    *,
    settings: Settings,
    params: Img2ImgParams,
    quality: Quality = Quality.standard,
    task: Task = Task.img2img,
    inpaint: InpaintParams | None = None,
    control: ControlParams | None = None,
    catalogue: Catalogue | None = None,
    outpaint: OutpaintParams | None = None,
    loras: Sequence[tuple[str, float]] = (),
    reference: ReferenceImage | None = None,
) -> JobRequest:
    """The user's own prompt and settings on the configured model (STUDIO_MODEL).

    A ControlNet comes from the catalogue's [controlnets], a LoRA (`loras`: name and weight) from its [loras], the
    IP-Adapter that reads a `reference` image from its [ip_adapters] (so `catalogue` is needed with any of them).
    """
    if task.upscale_factor is not None:
        raise Refused("Upscaling runs through the Upscale styles of the catalogue.")
    family = configured_family(settings)
    return JobRequest(
        spec=RunSpec(
            task=task,
            params=params,
            control=_resolve_control(control, catalogue, settings, family=family, runs="The configured model"),
            inpaint=inpaint,
            outpaint=outpaint,
        ),
        model=settings.model,
        quality=quality,
        base_credits=configured_model_credits(settings),
        family=family,
        user_prompt=params.prompt,
        user_negative_prompt=params.negative_prompt,
        loras=resolve_loras(catalogue, loras, settings),
        **_reference(catalogue, reference, settings, family=family, model=settings.model),
    )


def _reference(
    catalogue: Catalogue | None, reference: ReferenceImage | None, settings: Settings, *, family: str, model: str
) -> dict[str, Any]:
    """A request's `reference` and `ip_adapter` fields for a reference image on a model of `family` (Refused: why)."""
    if reference is None:
        return {}
    return {
        "reference": reference,
        "ip_adapter": ip_adapter_ref(catalogue, reference, family=family, model=model, settings=settings),
    }


def style_request(*, settings: Settings, catalogue: Catalogue, style_id: str, **options: Any) -> JobRequest:
    """The catalogue style `style_id` with `options` as styled_request takes them (params, quality, inpaint, control,
    noise_level, outpaint, references, loras)."""
    try:
        style = catalogue.style(style_id)
    except CatalogueError as exc:
        raise Refused(str(exc)) from exc
    return styled_request(settings=settings, catalogue=catalogue, style=style, **options)


def styled_request(
    *,
    settings: Settings,
    catalogue: Catalogue,
    style: Style,
    params: Img2ImgParams,
    quality: Quality = Quality.standard,
    inpaint: InpaintParams | None = None,
    control: ControlParams | None = None,
    noise_level: int = 20,
    outpaint: OutpaintParams | None = None,
    references: tuple[str, ...] = (),
    loras: Sequence[tuple[str, float]] = (),
    reference: ReferenceImage | None = None,
) -> JobRequest:
    """A style (a catalogue style, or a team's brand kit as one: studio.kits) on its catalogue model: `params` hold
    the user's own prompt and negative prompt (the style's template and negative prompt are applied here) and the
    strength, steps, guidance and seed the user settled on.

    An img2img style with `inpaint` options runs as inpainting (with `outpaint`, expanding to a format).
    Refuses a model that is not available on this machine (saying how to get it), a quality tier the style does
    not offer, and a ControlNet made for another model family. An edit style's `references` name its reference
    images by sha256; `loras` are (name, weight) pairs of the catalogue's [loras]; a `reference` image (img2img and
    inpaint) is read by the catalogue's IP-Adapter of the model's family, refused for a family without one.
    """
    task = style.task
    if inpaint is not None:
        if task != Task.img2img:
            kind = "an edit" if task == Task.edit else "an upscaling"
            raise Refused(f"{style.name} is {kind} style; choose an image-to-image style to inpaint.")
        task = Task.inpaint
    if quality not in style.qualities:
        offered = ", ".join(QUALITY_TIERS[q].label for q in style.qualities)
        raise Refused(f"{style.name} is offered in {offered} quality, not {QUALITY_TIERS[quality].label}.")
    _require_available(catalogue, style.model, settings, what=f"{style.name} uses the model {style.model!r}")
    entry = catalogue.models[style.model]
    return JobRequest(
        spec=RunSpec(
            task=task,
            params=replace(
                params,
                prompt=style.prompt_for(params.prompt),
                negative_prompt=style.negative_for(params.negative_prompt),
            ),
            control=_resolve_control(control, catalogue, settings, family=entry.family, runs=style.name),
            inpaint=inpaint,
            noise_level=noise_level,
            outpaint=outpaint,
        ),
        model=catalogue.location(style.model, settings),
        quality=quality,
        base_credits=entry.credits,
        catalogue_model=entry.name,
        family=entry.family,
        offload=entry.offload,
        style=style.id,
        user_prompt=params.prompt,
        user_negative_prompt=params.negative_prompt,
        references=references,
        loras=resolve_loras(catalogue, loras, settings),
        **_reference(catalogue, reference, settings, family=entry.family, model=entry.name),
    )


def recipe_request(*, settings: Settings, catalogue: Catalogue, recipe: dict[str, Any]) -> JobRequest:
    """The request that made a result, read back from its recipe: same model, prompts, settings and seed,
    priced by the model that runs (never by the style the recipe names).

    Only models this studio offers are accepted (the configured model and the catalogue's, or their
    preview stand-ins): a recipe comes from an uploaded file, and loading whatever folder or hub id a
    file names would let a stranger's PNG decide what code and weights the worker loads (so a recipe names its
    LoRAs by catalogue name and hash, never by file). The style is kept as the job's label only when that style
    runs the same model today.
    """
    spec, quality = read_recipe_spec(recipe, refusal=CANNOT_RERUN)
    model = recipe.get("model")
    if not isinstance(model, str) or not model:
        raise Refused("This file's recipe names no model, so it cannot be re-run.")
    entry = _recipe_model(settings, catalogue, recipe, model, spec.task)
    if entry is None:
        base_credits, family = configured_model_credits(settings), configured_family(settings)
    else:
        _require_available(catalogue, entry.name, settings, what=f"This recipe runs the model {entry.name!r}")
        base_credits, family = entry.credits, entry.family
    _recipe_family(recipe, family, entry.name if entry is not None else model)
    if spec.control is not None:
        _recipe_control(settings, catalogue, spec.control, family)
    style_id = recipe.get("style")
    style = catalogue.styles.get(style_id) if isinstance(style_id, str) else None
    if style is not None and (entry is None or style.model != entry.name):
        style = None  # the style runs another model now: the job is this recipe's run, not that style's
    return JobRequest(
        spec=spec,
        model=model,
        quality=quality,
        base_credits=base_credits,
        catalogue_model=entry.name if entry is not None else None,
        family=family,
        offload=entry.offload if entry is not None else "none",
        style=style.id if style is not None else None,
        user_prompt=recipe_text(recipe, "user_prompt", spec.params.prompt, refusal=CANNOT_RERUN),
        user_negative_prompt=recipe_text(
            recipe, "user_negative_prompt", spec.params.negative_prompt, refusal=CANNOT_RERUN
        ),
        references=recipe_references(recipe, refusal=CANNOT_RERUN),
        loras=recipe_loras(catalogue, recipe, settings, refusal=CANNOT_RERUN),
        **_recipe_reference(catalogue, recipe, settings, family=family, model=entry.name if entry else model),
    )


def _recipe_reference(
    catalogue: Catalogue, recipe: dict[str, Any], settings: Settings, *, family: str, model: str
) -> dict[str, Any]:
    found = recipe_reference(catalogue, recipe, settings, family=family, model=model, refusal=CANNOT_RERUN)
    return {} if found is None else {"reference": found[0], "ip_adapter": found[1]}


def recipe_references(recipe: dict[str, Any], *, refusal: str) -> tuple[str, ...]:
    """The sha256 of each reference image an edit's recipe names (none for other recipes)."""
    references = recipe.get("references") or []
    if not isinstance(references, list) or not all(
        isinstance(sha256, str) and len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)
        for sha256 in references
    ):
        raise Refused(f"{refusal}: references should be a list of sha256 hashes, got {references!r}.")
    return tuple(references)


def read_recipe_spec(recipe: dict[str, Any], *, refusal: str) -> tuple[RunSpec, Quality]:
    """What a recipe (or a job's params) asks to run, and its quality tier; Refused("<refusal>: why")."""
    try:
        spec, quality = RunSpec.from_dict(recipe), Quality(recipe.get("quality", Quality.standard))
    except (PipelineInputError, ValueError) as exc:
        raise Refused(f"{refusal}: {exc}") from exc
    if spec.task not in STUDIO_TASKS:
        raise Refused(f"{refusal}: it is a {spec.task.label} recipe, and the studio has no {spec.task.label} page yet.")
    return spec, quality


def recipe_text(recipe: dict[str, Any], key: str, default: str, *, refusal: str) -> str:
    """A text entry of a recipe (`default` when absent); Refused("<refusal>: why") when it is not text."""
    value = recipe.get(key, default)
    if not isinstance(value, str):
        raise Refused(f"{refusal}: {key} should be text, got {value!r}.")
    return value


def _recipe_model(
    settings: Settings, catalogue: Catalogue, recipe: dict[str, Any], model: str, task: Task
) -> ModelEntry | None:
    """The catalogue model a recipe runs (None: the configured model), checked against what the worker loads.

    Recipes name their catalogue model; older ones only name what the worker loaded, so that is matched to the
    style's model, the configured model, or the one catalogue model at that location.
    """
    named = recipe.get("catalogue_model")
    if named is not None:
        if not isinstance(named, str) or named not in catalogue.models:
            raise Refused(
                f"This recipe was made with the catalogue model {named!r}, which this studio does not offer. "
                "Ask an admin to add it to the style catalogue."
            )
        if catalogue.location(named, settings) != model:
            raise Refused(
                f"This recipe says the catalogue model {named!r} ran, but names {model!r} as what was loaded; "
                f"{named!r} is {catalogue.location(named, settings)!r} here. It cannot be re-run as it is."
            )
        entry = catalogue.models[named]
    else:
        entry = _legacy_recipe_model(settings, catalogue, recipe, model)
    if entry is None:
        if task.upscale_factor is not None:
            raise Refused("The configured model does not upscale; upscaling runs through the Upscale styles.")
        return None
    if catalogue.kind_for(task) is not entry.kind:
        raise Refused(
            f"This recipe asks the {entry.kind.value} model {entry.name!r} to run {task.label}, which it cannot do."
        )
    return entry


def _legacy_recipe_model(
    settings: Settings, catalogue: Catalogue, recipe: dict[str, Any], model: str
) -> ModelEntry | None:
    style_id = recipe.get("style")
    style = catalogue.styles.get(style_id) if isinstance(style_id, str) else None
    if style is not None and catalogue.location(style.model, settings) == model:
        return catalogue.models[style.model]
    if model == settings.model:
        return None
    matches = [entry for entry in catalogue.models.values() if catalogue.location(entry.name, settings) == model]
    if len({entry.credits for entry in matches}) == 1 and matches[0].kind is not ModelKind.controlnet:
        return matches[0]
    if matches:
        raise Refused(
            f"This recipe names {model!r}, which several catalogue models run here at different prices; "
            "it cannot tell which one made the result."
        )
    raise Refused(
        f"This recipe was made with the model {model!r}, which this studio does not offer. "
        "Ask an admin to add it to the style catalogue."
    )


def _recipe_family(recipe: dict[str, Any], family: str, model: str) -> None:
    """A recipe that names its family (version 4 on) re-runs only on a model of that family: the same name on a
    model of another family would be another picture (older recipes name none and are taken as they are)."""
    named = recipe.get("family")
    if named is not None and named != family:
        raise Refused(
            f"This recipe was made with a {named} model, and {model!r} is a {family} model here; "
            "it cannot be re-run as it is."
        )


def _recipe_control(settings: Settings, catalogue: Catalogue, control: ControlParams, family: str) -> None:
    """A recipe's ControlNet must be one the catalogue offers, for the family of the model that runs."""
    offered = [
        controlnet
        for controlnet in catalogue.models.values()
        if controlnet.kind is ModelKind.controlnet and catalogue.location(controlnet.name, settings) == control.model
    ]
    if not offered:
        raise Refused(f"This recipe's ControlNet {control.model!r} is not one this studio offers.")
    if all(controlnet.family != family for controlnet in offered):
        raise Refused(
            f"This recipe's ControlNet {control.model!r} is made for {offered[0].family} models, and "
            f"the model it runs is a {family} model."
        )


def _require_available(catalogue: Catalogue, model: str, settings: Settings, *, what: str) -> None:
    availability = catalogue.availability(model, settings)
    if not availability.ready:
        raise Refused(f"{what}, which is not available here. {availability.note}")


def _resolve_control(
    control: ControlParams | None,
    catalogue: Catalogue | None,
    settings: Settings,
    *,
    family: str,
    runs: str,
) -> ControlParams | None:
    """The ControlNet settings with the model the catalogue names for the guide and the family of the model that
    runs (`runs`: the style's name, for the message), as the worker loads it."""
    if control is None:
        return None
    if catalogue is None:
        raise Refused("ControlNet guidance needs the style catalogue, which names the ControlNet per guide.")
    try:
        entry = catalogue.controlnet_for(control.guide, family)
    except CatalogueError as exc:
        raise Refused(
            f"{exc} {runs} runs a {family} model: choose another guide or style, or turn structure guidance off."
        ) from exc
    _require_available(catalogue, entry.name, settings, what=f"The {control.guide.label} guide uses {entry.name!r}")
    return replace(control, model=catalogue.location(entry.name, settings))
