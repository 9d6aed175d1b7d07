"""What a model family is: the pipelines that run it, its sizes and defaults, and what its recipe records.

Torch-free: the studio reads a family's defaults and limits (and refuses a bad request) without the model
stack. Pipeline classes are named here and imported only by `Family.pipeline_class`, which the heavy modules
(pipelines.cache, pipelines.img2img, …) call.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import PipelineInputError
from pipelines.params import SIZE_MULTIPLE, Img2ImgParams, Task, output_size

# The parts of a family that have a tiny offline stand-in (pipelines.registry.PREVIEW_MODELS).
BASE = "base"
CONTROLNET = "controlnet"
INPAINTING = "inpainting"  # a dedicated inpainting checkpoint (9-channel UNet)
# The latent channels of Stable Diffusion's VAEs: a UNet taking more is an inpainting checkpoint's.
LATENT_CHANNELS = 4


@dataclass(frozen=True)
class Preview:
    """A tiny offline model of the family: random weights, real shapes, built in code by `builder` (a function
    of pipelines.tiny taking a seed) and saved under the models folder as `name`."""

    name: str
    role: str  # BASE, CONTROLNET or INPAINTING
    builder: str
    marker: str = "model_index.json"  # the file whose presence marks its saved folder complete


@dataclass(frozen=True)
class Pipelines:
    """diffusers pipeline class names. The cache loads `base` once per model; each request derives the pipeline
    of its task from it (shared weights, a scheduler of its own: pipelines.cache.request_pipeline)."""

    base: str
    img2img: str | None  # None: the family does not run the task (an instruction editor only edits)
    inpaint: str | None
    controlnet_img2img: str | None = None  # None: the family has no ControlNet pipelines the studio runs
    controlnet_inpaint: str | None = None
    # What inpaints with a dedicated inpainting checkpoint (FLUX.1 Fill); None: `inpaint` runs those too.
    inpainting_checkpoint: str | None = None
    edit: str | None = None  # an instruction editor (Task.edit)
    masked_edit: str | None = None  # the editor restricted to a mask


@dataclass(frozen=True)
class Defaults:
    """What a style or form of the family starts from."""

    steps: int
    guidance: float
    strength: float


@dataclass(frozen=True)
class Family:
    """One model family (one module each under pipelines/families). A subclass overrides the methods whose
    family-specific behaviour is more than data (SDXL: its pipeline options and micro-conditioning)."""

    name: str  # as the catalogue's `family` field and ModelRef.family spell it
    label: str
    pipelines: Pipelines
    previews: tuple[Preview, ...]
    native_side: int  # px per side the model was trained at
    max_side: int  # output cap: results are scaled down to this long side, whatever the studio allows
    min_side: int  # the smallest source side it takes
    defaults: Defaults
    dtypes: dict[str, str]  # device type ("cuda", "mps", "cpu") → torch dtype name
    size_multiple: int = SIZE_MULTIPLE  # rendered sides are multiples of this (the VAE's 8 px per latent)
    one_pass_sweeps: bool = True  # strengths' schedules are suffixes of one schedule (pipelines.sweep)
    # The one-pass loop its sweeps run on: "unet" (pipelines.sweep, Stable Diffusion's UNets, img2img and inpaint)
    # or "flux" (pipelines.sweep_flux, img2img).
    sweep_engine: str = "unet"
    # Its pipelines run a float16 VAE in float32 when the VAE's config says force_upcast (SDXL's VAE overflows
    # in float16); the sweep engine does what they do.
    vae_upcast: bool = False
    negative_prompt: bool = True  # its pipelines take a negative prompt (guidance-distilled FLUX.1 does not)
    # Editors: the most pixels a render has (the source's aspect within it, never scaled up); None: only the side
    # caps apply.
    pixel_budget: int | None = None
    max_images: int = 1  # images an edit may take: the source, then references (Qwen-Image-Edit Plus: 3)
    soft_inpainting: bool = True  # per-pixel strength (pipelines.inpaint.SoftBlend) works on its latents
    load_options: dict[str, Any] = field(default_factory=dict)  # extra from_pretrained arguments of `base`
    request_options: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments of task pipelines

    # --- pipelines ---------------------------------------------------------------------------------

    def pipeline_class_name(
        self,
        task: Task | None,
        *,
        controlnet: bool = False,
        inpainting_checkpoint: bool = False,
        masked: bool = False,
    ) -> str:
        """The diffusers class that runs `task` (None: the base the cache loads), with a ControlNet, on a
        dedicated inpainting checkpoint, or (an edit) within a mask; a PipelineInputError if the family has none."""
        pipelines = self.pipelines
        if task is None:
            return pipelines.base
        name = None
        if controlnet:
            name = {Task.img2img: pipelines.controlnet_img2img, Task.inpaint: pipelines.controlnet_inpaint}.get(task)
            what = f"ControlNet {task.label.lower()}"
        elif task == Task.img2img:
            name, what = pipelines.img2img, "image to image"
        elif task == Task.inpaint:
            name, what = (inpainting_checkpoint and pipelines.inpainting_checkpoint) or pipelines.inpaint, "inpaint"
        elif task == Task.edit:
            name, what = (pipelines.masked_edit, "masked edit") if masked else (pipelines.edit, "instruction edit")
        else:
            what = task.label.lower()
        if name is None:
            raise PipelineInputError(f"The {self.label} family has no {what} pipeline.")
        return name

    def pipeline_class(self, task: Task | None, **variant: bool) -> type:
        """The class itself (`variant`: pipeline_class_name's flags); imports diffusers, so only the heavy modules
        call it."""
        return getattr(importlib.import_module("diffusers"), self.pipeline_class_name(task, **variant))

    def denoiser(self, pipe: Any) -> Any:
        """The network that denoises the latents: Stable Diffusion's UNet (a transformer for FLUX.1)."""
        return pipe.unet

    def is_inpainting_checkpoint(self, base: Any) -> bool:
        """Whether the loaded model is a dedicated inpainting checkpoint: its denoiser also takes the mask and
        the masked source as input channels (SD's 9-channel UNets), so it cannot transform a whole image."""
        return base.unet.config.in_channels != LATENT_CHANNELS

    def call_arguments(self, params: Img2ImgParams) -> dict[str, Any]:
        """Call arguments that replace or add to what `pipelines.denoise` passes (prompt, negative prompt, steps,
        guidance_scale, generator): how the family takes its guidance. Stable Diffusion and FLUX need none."""
        return {}

    def load_components(self, location: str, *, local_files_only: bool) -> dict[str, Any]:
        """Components the cache builds itself and hands to `from_pretrained` (beyond load_options). Heavy: only
        pipelines.cache calls it, once per load."""
        return {}

    def run_context(self, *, preview: bool) -> AbstractContextManager[None]:
        """What a run of one of its models (`preview`: a tiny offline one) runs inside, holding the run lock."""
        return nullcontext()

    def check_params(self, params: Img2ImgParams, *, model: str) -> None:
        """Refuse settings the family's pipelines would silently ignore."""
        if params.negative_prompt and not self.negative_prompt:
            raise PipelineInputError(
                f"Model '{model}' ({self.label}) takes no negative prompt: describe what you want instead."
            )

    def pipeline_options(self, base: Any) -> dict[str, Any]:
        """Constructor arguments, beyond the shared components, of a task pipeline derived from the loaded `base`."""
        return dict(self.request_options)

    def dtype_name(self, device: str) -> str:
        """The torch dtype its models run in on `device` ("cuda:1" counts as "cuda")."""
        return self.dtypes.get(device.split(":")[0], "float32")

    # --- sizes and steps ---------------------------------------------------------------------------

    def output_size(self, width: int, height: int, max_side: int) -> tuple[int, int]:
        """The size a width×height source renders at: scaled down (never up) to fit min(max_side, the family's
        cap) and the pixel budget, sides rounded down to its size multiple."""
        cap = min(max_side, self.max_side)
        if self.pixel_budget is None:
            return output_size(width, height, cap, self.size_multiple)
        scale = min(1.0, (self.pixel_budget / (width * height)) ** 0.5, cap / max(width, height))
        multiple = self.size_multiple
        return (
            max(multiple, int(width * scale) // multiple * multiple),
            max(multiple, int(height * scale) // multiple * multiple),
        )

    def check_source(self, width: int, height: int, *, model: str) -> None:
        if min(width, height) < self.min_side:
            raise PipelineInputError(
                f"The source image is {width}×{height} px; model '{model}' ({self.label}) needs at least "
                f"{self.min_side} px per side."
            )

    def denoising_steps(self, steps: int, strength: float) -> int:
        """The steps a run of `steps` at `strength` takes: diffusers' img2img and inpaint pipelines run the last
        int(steps × strength) steps of the schedule (get_timesteps)."""
        return min(int(steps * strength), steps)

    # --- conditioning and recipes ------------------------------------------------------------------

    def conditioning(self, pipe: Any, *, source_size: tuple[int, int], render_size: tuple[int, int]) -> dict:
        """Extra call arguments of a run that renders `render_size` (w, h) from a source region of
        `source_size` (w, h) px. Stable Diffusion has none."""
        return {}

    def recipe(self, conditioning: dict[str, Any]) -> dict[str, Any]:
        """What a result's recipe records about the family: its name and the conditioning the run used (JSON)."""
        return {"family": self.name} | {
            key: list(value) if isinstance(value, tuple) else value for key, value in conditioning.items()
        }

    # --- previews ----------------------------------------------------------------------------------

    def preview(self, role: str = BASE) -> str | None:
        """The name of the family's tiny offline model for `role` (None if it has none)."""
        return next((preview.name for preview in self.previews if preview.role == role), None)
