"""Strength sweeps in one pass: every member of a sweep shares one denoising loop and one batched UNet call per step.

For a fixed step count N, the timesteps a strength runs are a suffix of one shared schedule
(diffusers' `get_timesteps`: the last int(N × strength) steps). So the loop walks that schedule once;
a member joins when the loop reaches its start step, and from then on goes through the UNet in the
same batched call as every other active member. The UNet runs max(member steps) times instead of
their sum; the prompt and the source are encoded once; all results are decoded in one batch.

Exactness: each member keeps what makes its pixels its own — a generator seeded with its seed (drawn
in the same order as a single run: the VAE sample, the noise, then any noise the scheduler adds) and a
scheduler of its own (multistep solvers such as DPM-Solver++ and UniPC keep per-sample history, and
Euler keeps a step index). Everything else is the same arithmetic as a single run of the family's img2img
or inpaint pipeline; the only difference is batching, which can change float rounding in the UNet and VAE.

Stable Diffusion 1.x/2.x and SDXL run on this one loop: an SDXL UNet also takes the pooled text embedding
and the added time ids (micro-conditioning) of each member's rows, negative rows first as in its pipelines.
Soft inpainting (per-pixel strength) blends each member after its own steps, as a single run does.

Families that do not share one schedule across strengths, models whose UNet takes a guidance embedding
(LCM-style), VAEs that normalise their latents and schedulers whose steps are not suffixes of one schedule
(PNDM with PRK warm-up, LCM) run the members one after another instead (`mode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from pipelines.adapters import applied_loras
from pipelines.cache import RUN_LOCK, get_base_pipeline, in_use, request_pipeline
from pipelines.denoise import encode_image, vae_in_float32, vae_tiling
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.families import Family, get_family
from pipelines.img2img import Img2ImgRequest, check_img2img_model, check_source, run_img2img
from pipelines.inpaint import (
    InpaintRequest,
    check_inpaint,
    inpaint_region,
    paste_back,
    run_inpaint,
    soft_blend,
    soft_noise,
    source_latents,
)
from pipelines.loras import LoraRef, check_loras
from pipelines.masks import latent_strengths, soft_pipeline_mask
from pipelines.params import MAX_SWEEP_MEMBERS, Img2ImgParams, InpaintParams, Task
from pipelines.registry import ModelRef
from pipelines.sweep_flux import flux_one_pass

ONE_PASS = "one-pass"
SEPARATE = "separate"


@dataclass(frozen=True)
class SweepRequest:
    image: Image.Image  # the source
    # One per cell: the same prompt, negative prompt and steps; its own strength, seed and guidance.
    members: tuple[Img2ImgParams, ...]
    max_side: int = 1024
    mask: Image.Image | None = None  # inpainting: "L", the source's size, 255 = repaint (grey: inpaint.soft)
    inpaint: InpaintParams = field(default_factory=InpaintParams)
    # Applied on the model for every cell (adapters are set on the whole model, so cells of one pass share them)
    loras: tuple[LoraRef, ...] = ()


@dataclass(frozen=True)
class SweepResult:
    images: tuple[Image.Image, ...]  # in member order
    denoising_steps: tuple[int, ...]  # per member: Family.denoising_steps (int(steps × strength))
    mode: str  # ONE_PASS, or SEPARATE (with `reason`)
    reason: str  # why the members ran separately ("" in one pass)
    unet_calls: int  # batched denoiser (UNet or transformer) calls in one pass, or their sum (separate runs)
    scheduler: str
    width: int
    height: int
    device: str
    dtype: str
    seconds: float
    recipe: dict[str, Any] = field(default_factory=dict)  # Family.recipe, the same for every cell


def check_sweep(members: tuple[Img2ImgParams, ...]) -> None:
    """A sweep varies strength, seed and guidance; everything else is shared by its members."""
    if not 1 <= len(members) <= MAX_SWEEP_MEMBERS:
        raise PipelineInputError(f"A sweep has 1 to {MAX_SWEEP_MEMBERS} cells, got {len(members)}.")
    for member in members:
        member.check()
    first = members[0]
    shared = {(m.prompt, m.negative_prompt, m.steps) for m in members}
    if shared != {(first.prompt, first.negative_prompt, first.steps)}:
        raise PipelineInputError("The cells of a sweep share one prompt, negative prompt and step count.")


def one_pass_obstacle(pipe: DiffusionPipeline, family: Family, *, inpainting: bool = False) -> str:
    """Why this pipeline cannot sweep in one pass ("" when it can)."""
    scheduler = pipe.scheduler
    if not family.one_pass_sweeps:
        return f"{family.label} models do not share one schedule across their cells, so the cells run one after another"
    if family.sweep_engine == "flux":
        return f"{family.label} inpainting cells run one after another" if inpainting else ""
    if getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None:
        return "this model takes guidance as an embedding (LCM-style), so its cells run one after another"
    if getattr(pipe.vae.config, "latents_mean", None) is not None:
        return "this model's VAE normalises its latents (latents_mean), so its cells run one after another"
    if type(scheduler).__name__ == "PNDMScheduler" and not scheduler.config.get("skip_prk_steps", False):
        return "PNDM's warm-up steps differ per strength, so its cells run one after another"
    if type(scheduler).__name__ in {"LCMScheduler", "TCDScheduler"}:
        return f"{type(scheduler).__name__} does not share one schedule across strengths"
    return ""


def run_sweep(
    ref: ModelRef,
    request: SweepRequest,
    *,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SweepResult:
    """Run every member of the sweep; on_step(step, total) after each step of the shared loop.

    A member with d denoising steps has done max(0, step − (total − d)) of them at loop step `step`
    (every member ends on the loop's last step). Raises PipelineInputError, ModelUnavailableError and
    RunCancelled as run_img2img does.
    """
    # 1. Check inputs
    family = get_family(ref.family, model=ref.name)
    members = request.members
    check_sweep(members)
    family.check_params(members[0], model=ref.name)  # members share the prompts it checks
    check_source(request.image, family, ref)
    check_loras(request.loras, family=ref.family, model=ref.name)
    inpainting = request.mask is not None
    if inpainting:
        check_inpaint(_single_inpaint(request, members[0]), family, ref)

    # 2. What the pipeline renders: the source at the output size, or the inpainting region at the working size
    if inpainting:
        region = inpaint_region(_single_inpaint(request, members[0]), family)
        work_image, work_mask, source_size = region.image, region.mask, region.source_size
    else:
        work_image = fitted_source(request.image, family, request.max_side)
        work_mask, source_size = None, request.image.size

    # Its models stay loaded (pinned in the cache) from here to the end of the sweep.
    with in_use():
        # 3. This request's pipeline: the cached base's weights, its own scheduler
        base = get_base_pipeline(ref)
        if not inpainting:
            check_img2img_model(base, family, ref)
        pipe = request_pipeline(
            base,
            family,
            Task.inpaint if inpainting else Task.img2img,
            inpainting_checkpoint=inpainting and family.is_inpainting_checkpoint(base),
        )
        obstacle = one_pass_obstacle(pipe, family, inpainting=inpainting)
        if obstacle:
            return _run_separately(ref, request, obstacle, family, on_step=on_step, should_stop=should_stop)
        conditioning = family.conditioning(pipe, source_size=source_size, render_size=work_image.size)
        # Soft inpainting: the per-pixel strengths, and the mask the pipeline would get (soft_pipeline_mask)
        strengths = None
        if inpainting and request.inpaint.soft:
            strengths = latent_strengths(work_mask, pipe.vae_scale_factor)
            work_mask = soft_pipeline_mask(work_mask, pipe.unet.config.in_channels)

        # 4. One pass for every cell (with the sweep's LoRAs on the shared model)
        with RUN_LOCK, applied_loras(base, request.loras):
            if should_stop is not None and should_stop():
                raise RunCancelled("Cancelled before the sweep started.")
            started = time.perf_counter()
            if family.sweep_engine == "flux":
                images, unet_calls = flux_one_pass(
                    pipe,
                    work_image,
                    members,
                    steps_of=lambda m: family.denoising_steps(m.steps, m.strength),
                    on_step=on_step,
                    should_stop=should_stop,
                )
            else:
                images, unet_calls = one_pass(
                    pipe,
                    family,
                    [work_image] * len(members),
                    work_mask,
                    members,
                    conditionings=[conditioning] * len(members),
                    strengths=strengths,
                    on_step=on_step,
                    should_stop=should_stop,
                )
            seconds = time.perf_counter() - started

    # 5. Inpainting: each cell back at the source's size, unmasked pixels kept as the options say
    if inpainting:
        images = [
            paste_back(_single_inpaint(request, m), region, image) for m, image in zip(members, images, strict=True)
        ]
    width, height = images[0].size
    return SweepResult(
        images=tuple(images),
        denoising_steps=tuple(family.denoising_steps(m.steps, m.strength) for m in members),
        mode=ONE_PASS,
        reason="",
        unet_calls=unet_calls,
        scheduler=type(pipe.scheduler).__name__,
        width=width,
        height=height,
        device=pipe._execution_device.type,
        dtype=str(base.dtype).removeprefix("torch."),
        seconds=round(seconds, 3),
        recipe=family.recipe(conditioning),
    )


def fitted_source(image: Image.Image, family: Family, max_side: int) -> Image.Image:
    """The source as img2img renders it: RGB, at the family's output size (as pipelines.img2img resizes it)."""
    width, height = family.output_size(image.width, image.height, max_side)
    fitted = image.convert("RGB")
    if fitted.size != (width, height):
        fitted = fitted.resize((width, height), Image.Resampling.LANCZOS)
    return fitted


def _single_inpaint(request: SweepRequest, member: Img2ImgParams) -> InpaintRequest:
    return InpaintRequest(
        request.image, request.mask, member, request.inpaint, max_side=request.max_side, loras=request.loras
    )


@dataclass(frozen=True)
class _Prompt:
    """A prompt's embeddings, encoded once for every member that shares it. SDXL adds the second encoder's pooled
    output and the added time ids (None for Stable Diffusion 1.x/2.x)."""

    positive: torch.Tensor
    negative: torch.Tensor | None  # None when no member uses classifier-free guidance
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None
    negative_time_ids: torch.Tensor | None = None


def _unet_inputs(prompts: list[_Prompt], guidance: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """encoder_hidden_states and added_cond_kwargs for the active members' rows (one prompt each): with guidance,
    every member's negative row first, then every member's positive row, as the pipelines order their two halves."""

    def rows(positive: str, negative: str) -> torch.Tensor:
        halves = ([getattr(p, negative) for p in prompts] if guidance else []) + [getattr(p, positive) for p in prompts]
        return torch.cat(halves)

    context = rows("positive", "negative")
    if prompts[0].pooled is None:
        return context, None
    added = {"text_embeds": rows("pooled", "negative_pooled"), "time_ids": rows("time_ids", "negative_time_ids")}
    return context, added


def _encode_prompt(pipe: DiffusionPipeline, member: Img2ImgParams, guidance: bool, conditioning: dict) -> _Prompt:
    """The prompt encoded as the family's pipeline encodes it (and, for SDXL, its added time ids)."""
    device = pipe._execution_device
    negative_prompt = member.negative_prompt or None
    if pipe.unet.config.addition_embed_type != "text_time":
        positive, negative = pipe.encode_prompt(member.prompt, device, 1, guidance, negative_prompt=negative_prompt)
        return _Prompt(positive, negative)
    positive, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=member.prompt,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=guidance,
        negative_prompt=negative_prompt,
    )
    projection = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else pooled.shape[-1]
    time_ids, negative_time_ids = pipe._get_add_time_ids(
        conditioning["original_size"],
        conditioning["crops_coords_top_left"],
        conditioning["target_size"],
        conditioning.get("aesthetic_score"),
        conditioning.get("negative_aesthetic_score"),
        conditioning["original_size"],  # the negative sizes and crop are the positive ones, as in a single run
        (0, 0),
        conditioning["target_size"],
        dtype=positive.dtype,
        text_encoder_projection_dim=int(projection),
    )
    return _Prompt(positive, negative, pooled, negative_pooled, time_ids.to(device), negative_time_ids.to(device))


@torch.no_grad()
def one_pass(
    pipe: DiffusionPipeline,
    family: Family,
    sources: list[Image.Image],
    mask: Image.Image | None,
    members: tuple[Img2ImgParams, ...],
    *,
    conditionings: list[dict[str, Any]],
    strengths: np.ndarray | None,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
    member_stopped: Callable[[int], bool] | None = None,
) -> tuple[list[Image.Image | None], int]:
    """The shared loop: member i renders sources[i] (all of one size) with its own params and the family's
    conditioning[i] (SDXL: its own micro-conditioning). A sweep passes one source and one conditioning for every
    member; a batch of jobs (pipelines.batch) one each. Sources, prompts and conditionings that are the same
    object or text are encoded once. The members share the step count; prompts may differ.

    `member_stopped(i)`, asked after each step, drops member i from the loop (its image is None); `should_stop`
    stops the whole loop (RunCancelled). With a mask (one shared source) it follows the family's inpaint
    pipeline: 4-channel UNets get the re-noised source blended in outside the mask after every step, 9-channel
    (inpainting) UNets get the mask and the masked source's latents as extra input channels. With `strengths`
    (soft inpainting), each member is then soft-blended after its own steps (pipelines.inpaint.soft_blend)."""
    device, dtype = pipe._execution_device, pipe.unet.dtype
    steps = members[0].steps
    uses_guidance = [m.guidance > 1 for m in members]
    any_guidance = any(uses_guidance)
    scaling = pipe.vae.config.scaling_factor
    unet_channels = pipe.unet.config.in_channels

    # 1. Encode each distinct prompt once (negative prompts too when any member uses classifier-free guidance)
    encoded_prompts: dict[tuple, _Prompt] = {}
    prompts = []
    for member, conditioning in zip(members, conditionings, strict=True):
        key = (member.prompt, member.negative_prompt, repr(sorted(conditioning.items())))
        if key not in encoded_prompts:
            encoded_prompts[key] = _encode_prompt(pipe, member, any_guidance, conditioning)
        prompts.append(encoded_prompts[key])

    # 2. Encode each distinct source (and masked source) once: the VAE's distribution is deterministic, each
    # member samples from it with its own generator
    width, height = sources[0].size
    if mask is not None:
        mask_condition = pipe.mask_processor.preprocess(mask, height=height, width=width)
        latent_size = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        mask_latent = torch.nn.functional.interpolate(mask_condition, size=latent_size).to(device=device, dtype=dtype)
    encodings: dict[int, dict[str, Any]] = {}
    for source in sources:
        if id(source) in encodings:
            continue
        pixels = pipe.image_processor.preprocess(source, height=height, width=width).to(dtype=torch.float32)
        encoding = encodings[id(source)] = {"encoded": encode_image(pipe, family, pixels)}
        if mask is not None:
            encoding["masked"] = encode_image(pipe, family, pixels * (mask_condition < 0.5))
        if strengths is not None:
            encoding["kept"] = source_latents(pipe, family, encoding["encoded"])

    # 3. Each member: its generator, its scheduler (set to the shared N-step schedule), its start step,
    # and its starting latents — drawn in a single run's order (VAE sample, noise, [masked-source sample]).
    schedulers, starts, latents, step_kwargs, clean, noises, masked, soft_noises = [], [], [], [], [], [], [], []
    for member, source in zip(members, sources, strict=True):
        encoding = encodings[id(source)]
        generator = torch.Generator("cpu").manual_seed(member.seed)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        start = (steps - family.denoising_steps(steps, member.strength)) * scheduler.order  # get_timesteps' t_start
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        first_timestep = scheduler.timesteps[start : start + 1]
        full_strength = member.strength == 1.0
        # The inpaint pipeline skips the source sample at full strength when the UNet does not need it.
        sample_source = mask is None or unet_channels == 4 or not full_strength
        image_latents = None
        if sample_source:
            image_latents = scaling * retrieve_latents(encoding["encoded"], generator=generator).to(dtype)
            if mask is not None:
                # The inpaint pipelines copy these latents into the standard memory layout (their batch repeat);
                # the layout decides the UNet's conv kernels, and so the float rounding.
                image_latents = image_latents.contiguous()
        shape = (1, pipe.vae.config.latent_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if mask is not None and full_strength:
            start_latents = noise * scheduler.init_noise_sigma
        else:
            start_latents = scheduler.add_noise(image_latents, noise, first_timestep)
        if mask is not None:
            masked.append(scaling * retrieve_latents(encoding["masked"], generator=generator).to(dtype))
        if strengths is not None:
            soft_noises.append(soft_noise(encoding["kept"], member.seed))
        latents.append(start_latents)
        clean.append(image_latents)
        noises.append(noise)
        schedulers.append(scheduler)
        starts.append(start)
        step_kwargs.append(pipe.prepare_extra_step_kwargs(generator, 0.0))

    # 4. One loop over the shared schedule from the earliest start; members join at their start step and leave
    # when member_stopped says so
    timesteps = schedulers[0].timesteps
    first = min(starts)
    total = len(timesteps) - first
    dropped: set[int] = set()
    unet_calls = 0
    for index in range(first, len(timesteps)):
        t = timesteps[index]
        next_timestep = timesteps[index + 1] if index < len(timesteps) - 1 else None
        active = [m for m in range(len(members)) if starts[m] <= index and m not in dropped]
        if active:
            rows = [schedulers[m].scale_model_input(latents[m], t) for m in active]
            if mask is not None and unet_channels == 9:
                rows = [torch.cat([row, mask_latent, masked[m]], dim=1) for row, m in zip(rows, active, strict=True)]
            scaled = torch.cat(rows)
            count = len(active)
            model_input = torch.cat([scaled, scaled]) if any_guidance else scaled
            context, added = _unet_inputs([prompts[m] for m in active], any_guidance)
            prediction = pipe.unet(
                model_input, t, encoder_hidden_states=context, added_cond_kwargs=added, return_dict=False
            )[0]
            unet_calls += 1
        for row, m in enumerate(active):
            if any_guidance:
                unconditional, text = prediction[row : row + 1], prediction[count + row : count + row + 1]
                noise_pred = unconditional + members[m].guidance * (text - unconditional) if uses_guidance[m] else text
            else:
                noise_pred = prediction[row : row + 1]
            latents[m] = schedulers[m].step(noise_pred, t, latents[m], **step_kwargs[m], return_dict=False)[0]
            if mask is not None and unet_channels == 4:
                # Outside the mask: the source, noised to where the next step starts.
                proper = clean[m]
                if next_timestep is not None:
                    proper = schedulers[m].add_noise(proper, noises[m], torch.tensor([next_timestep]))
                latents[m] = (1 - mask_latent) * proper + mask_latent * latents[m]
            if strengths is not None:
                latents[m] = soft_blend(
                    schedulers[m],
                    latents[m],
                    source=encodings[id(sources[m])]["kept"],
                    noise=soft_noises[m],
                    strengths=strengths,
                    step=index - starts[m],
                    total=len(timesteps) - starts[m],
                    next_timestep=next_timestep,
                )
        step = index - first + 1
        if on_step is not None:
            on_step(step, total)
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled after step {step} of {total}.")
        if member_stopped is not None:
            dropped.update(m for m in range(len(members)) if m not in dropped and member_stopped(m))

    # 5. Decode the members still wanted in one batch (in float32 where the family's pipelines upcast the VAE)
    kept = [m for m in range(len(members)) if m not in dropped]
    images: list[Image.Image | None] = [None] * len(members)
    if kept:
        height, width = sources[0].height, sources[0].width
        with vae_in_float32(pipe, family) as vae_dtype, vae_tiling(pipe, pixels=width * height, images=len(kept)):
            batch = torch.cat([latents[m] for m in kept]).to(vae_dtype) / scaling
            decoded = pipe.vae.decode(batch, return_dict=False)[0]
        made = pipe.image_processor.postprocess(decoded, output_type="pil", do_denormalize=[True] * len(kept))
        for m, image in zip(kept, made, strict=True):
            images[m] = image
    return images, unet_calls


def _run_separately(
    ref: ModelRef,
    request: SweepRequest,
    reason: str,
    family: Family,
    *,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> SweepResult:
    """The fallback: each member as its own img2img or inpaint run; progress counts every member's steps."""
    member_steps = [family.denoising_steps(m.steps, m.strength) for m in request.members]
    total = sum(member_steps)
    done = 0

    def member_step(step: int, _member_total: int) -> None:
        if on_step is not None:
            on_step(done + step, total)

    results = []
    for member, steps in zip(request.members, member_steps, strict=True):
        if request.mask is not None:
            result = run_inpaint(ref, _single_inpaint(request, member), on_step=member_step, should_stop=should_stop)
        else:
            single = Img2ImgRequest(image=request.image, params=member, max_side=request.max_side, loras=request.loras)
            result = run_img2img(ref, single, on_step=member_step, should_stop=should_stop)
        results.append(result)
        done += steps
    return SweepResult(
        images=tuple(r.image for r in results),
        denoising_steps=tuple(r.denoising_steps for r in results),
        mode=SEPARATE,
        reason=reason,
        unet_calls=total,
        scheduler=results[0].scheduler,
        width=results[0].width,
        height=results[0].height,
        device=results[0].device,
        dtype=results[0].dtype,
        seconds=round(sum(r.seconds for r in results), 3),
        recipe=results[0].recipe,
    )
