"""What a user asks the studio to run, before it is priced and queued: a `JobRequest`.

A request is built from a catalogue style (its model, prompt template, negative prompt and credits),
from the user's own settings on the configured model, or from a result's recipe (an exact re-run).
Building one resolves every model to what the worker will load and refuses what cannot run here,
with a message that says why; nothing is stored or charged until `studio.queue.submit_job`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipelines.errors import PipelineInputError
from pipelines.params import ControlParams, Img2ImgParams, InpaintParams, RunSpec, Task
from studio.catalogue import Catalogue, CatalogueError, Style
from studio.config import Settings
from studio.pricing import QUALITY_TIERS, Quality, base_cost


class SubmitRefused(ValueError):
    """The job was not queued and nothing was charged or stored; the message says why."""


@dataclass(frozen=True)
class JobRequest:
    spec: RunSpec  # what runs: the final prompts (style template applied) and the ControlNet's location
    model: str  # what the worker loads: a preview model name, a hub id or a folder
    quality: Quality
    base_credits: int  # before the quality and high-resolution multipliers (studio.pricing)
    style: str | None = None  # the catalogue style, None for the user's own settings
    user_prompt: str = ""  # what the user wrote, before the style's template
    user_negative_prompt: str = ""

    @property
    def task(self) -> Task:
        return self.spec.task

    def check(self) -> None:
        """The checks that need no catalogue: parameters in range, steps within the quality tier."""
        try:
            self.spec.check()
        except PipelineInputError as exc:
            raise SubmitRefused(str(exc)) from exc
        tier = QUALITY_TIERS[self.quality]
        if self.spec.params.steps > tier.max_steps:
            raise SubmitRefused(
                f"{tier.label} quality covers up to {tier.max_steps} steps; "
                f"{self.spec.params.steps} steps need a higher tier."
            )

    def job_params(self) -> dict[str, Any]:
        """What `Job.params` stores: the run spec plus the user's own words."""
        return self.spec.to_dict() | {
            "user_prompt": self.user_prompt,
            "user_negative_prompt": self.user_negative_prompt,
        }


def custom_request(
    *,
    settings: Settings,
    params: Img2ImgParams,
    quality: Quality = Quality.standard,
    task: Task = Task.img2img,
    inpaint: InpaintParams | None = None,
    control: ControlParams | None = None,
    catalogue: Catalogue | None = None,
) -> JobRequest:
    """The user's own prompt and settings on the configured model (STUDIO_MODEL).

    A ControlNet comes from the catalogue's [controlnets] (so `catalogue` is needed with `control`).
    """
    if task.upscale_factor is not None:
        raise SubmitRefused("Upscaling runs through the Upscale styles of the catalogue.")
    return JobRequest(
        spec=RunSpec(
            task=task,
            params=params,
            control=_resolve_control(control, catalogue, settings, model_family=None),
            inpaint=inpaint,
        ),
        model=settings.model,
        quality=quality,
        base_credits=base_cost(settings.model, settings.model_cost),
        user_prompt=params.prompt,
        user_negative_prompt=params.negative_prompt,
    )


def style_request(
    *,
    settings: Settings,
    catalogue: Catalogue,
    style_id: str,
    params: Img2ImgParams,
    quality: Quality = Quality.standard,
    inpaint: InpaintParams | None = None,
    control: ControlParams | None = None,
    noise_level: int = 20,
) -> JobRequest:
    """A catalogue style: `params` hold the user's own prompt and negative prompt (the style's template and
    negative prompt are applied here) and the strength, steps, guidance and seed the user settled on.

    An img2img style with `inpaint` options runs as inpainting. Refuses a model that is not available on
    this machine (saying how to get it), a quality tier the style does not offer, and a ControlNet made
    for another model family.
    """
    try:
        style = catalogue.style(style_id)
    except CatalogueError as exc:
        raise SubmitRefused(str(exc)) from exc
    task = style.task
    if inpaint is not None:
        if task != Task.img2img:
            raise SubmitRefused(f"{style.name} is an upscaling style; choose an image-to-image style to inpaint.")
        task = Task.inpaint
    if quality not in style.qualities:
        offered = ", ".join(QUALITY_TIERS[q].label for q in style.qualities)
        raise SubmitRefused(f"{style.name} is offered in {offered} quality, not {QUALITY_TIERS[quality].label}.")
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
            control=_resolve_control(control, catalogue, settings, model_family=entry.family, style=style),
            inpaint=inpaint,
            noise_level=noise_level,
        ),
        model=catalogue.location(style.model, settings),
        quality=quality,
        base_credits=style.credits,
        style=style.id,
        user_prompt=params.prompt,
        user_negative_prompt=params.negative_prompt,
    )


def recipe_request(*, settings: Settings, catalogue: Catalogue, recipe: dict[str, Any]) -> JobRequest:
    """The request that made a result, read back from its recipe: same model, prompts, settings and seed.

    Only models this studio offers are accepted (the configured model and the catalogue's, or their
    preview stand-ins): a recipe comes from an uploaded file, and loading whatever folder or hub id a
    file names would let a stranger's PNG decide what code and weights the worker loads.
    """
    try:
        spec = RunSpec.from_dict(recipe)
        quality = Quality(recipe.get("quality", Quality.standard))
    except (PipelineInputError, ValueError) as exc:
        raise SubmitRefused(f"This file's recipe cannot be re-run: {exc}") from exc
    model = str(recipe.get("model", ""))
    offered = {settings.model} | {catalogue.location(name, settings) for name in catalogue.models}
    if model not in offered:
        raise SubmitRefused(
            f"This recipe was made with the model {model!r}, which this studio does not offer. "
            "Ask an admin to add it to the style catalogue."
        )
    if spec.control is not None and spec.control.model not in offered:
        raise SubmitRefused(f"This recipe's ControlNet {spec.control.model!r} is not one this studio offers.")
    style_id = recipe.get("style")
    style = catalogue.styles.get(style_id) if isinstance(style_id, str) else None
    return JobRequest(
        spec=spec,
        model=model,
        quality=quality,
        base_credits=style.credits if style is not None else base_cost(model, settings.model_cost),
        style=style.id if style is not None else None,
        user_prompt=str(recipe.get("user_prompt", spec.params.prompt)),
        user_negative_prompt=str(recipe.get("user_negative_prompt", spec.params.negative_prompt)),
    )


def _require_available(catalogue: Catalogue, model: str, settings: Settings, *, what: str) -> None:
    availability = catalogue.availability(model, settings)
    if not availability.ready:
        raise SubmitRefused(f"{what}, which is not available here. {availability.note}")


def _resolve_control(
    control: ControlParams | None,
    catalogue: Catalogue | None,
    settings: Settings,
    *,
    model_family: str | None,
    style: Style | None = None,
) -> ControlParams | None:
    """The ControlNet settings with the model the catalogue names for the guide, as the worker loads it."""
    if control is None:
        return None
    if catalogue is None:
        raise SubmitRefused("ControlNet guidance needs the style catalogue, which names the ControlNet per guide.")
    try:
        entry = catalogue.controlnet_for(control.guide)
    except CatalogueError as exc:
        raise SubmitRefused(str(exc)) from exc
    if model_family is not None and entry.family != model_family:
        raise SubmitRefused(
            f"The {control.guide.label} ControlNet ({entry.name}) is made for {entry.family} models, "
            f"and {style.name if style else 'this style'} uses a {model_family} model; "
            "choose another style or turn structure guidance off."
        )
    _require_available(catalogue, entry.name, settings, what=f"The {control.guide.label} guide uses {entry.name!r}")
    return replace(control, model=catalogue.location(entry.name, settings))
