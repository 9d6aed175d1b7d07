"""Strength sweeps in one pass: every member of a sweep shares one denoising loop and one batched UNet call per step.

For a fixed step count N, the timesteps a strength runs are a suffix of one shared schedule
(diffusers' `get_timesteps`: the last int(N × strength) steps). So the loop walks that schedule once;
a member joins when the loop reaches its start step, and from then on goes through the UNet in the
same batched call as every other active member. The UNet runs max(member steps) times instead of
their sum; the prompt and the source are encoded once; all results are decoded in one batch.

Exactness: each member keeps what makes its pixels its own — a generator seeded with its seed (drawn
in the same order as a single run: the VAE sample, the noise, then any noise the scheduler adds) and a
scheduler of its own (multistep solvers such as DPM-Solver++ and UniPC keep per-sample history, and
Euler keeps a step index). Everything else is the same arithmetic as a single run of the img2img
pipeline; the only difference is batching, which can change float rounding in the UNet and VAE.

Models whose UNet takes a guidance embedding (LCM-style) and schedulers whose steps are not suffixes
of one schedule (PNDM with PRK warm-up, LCM) run the members one after another instead (`mode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from pipelines.cache import RUN_LOCK, get_base_pipeline, request_pipeline
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.img2img import Img2ImgRequest, check_source, run_img2img
from pipelines.inpaint import InpaintRequest, check_inpaint, inpaint_region, paste_back, run_inpaint
from pipelines.params import MAX_SWEEP_MEMBERS, Img2ImgParams, InpaintParams, output_size
from pipelines.registry import ModelRef

ONE_PASS = "one-pass"
SEPARATE = "separate"


@dataclass(frozen=True)
class SweepRequest:
    image: Image.Image  # the source
    # One per cell: the same prompt, negative prompt and steps; its own strength, seed and guidance.
    members: tuple[Img2ImgParams, ...]
    max_side: int = 1024
    mask: Image.Image | None = None  # inpainting: "L", the source's size, 255 = repaint
    inpaint: InpaintParams = field(default_factory=InpaintParams)


@dataclass(frozen=True)
class SweepResult:
    images: tuple[Image.Image, ...]  # in member order
    denoising_steps: tuple[int, ...]  # per member: int(steps × strength)
    mode: str  # ONE_PASS, or SEPARATE (with `reason`)
    reason: str  # why the members ran separately ("" in one pass)
    unet_calls: int  # batched UNet forward calls (one pass) or their sum (separate runs)
    scheduler: str
    width: int
    height: int
    device: str
    dtype: str
    seconds: float


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


def one_pass_obstacle(pipe: DiffusionPipeline) -> str:
    """Why this pipeline cannot sweep in one pass ("" when it can)."""
    scheduler = pipe.scheduler
    if getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None:
        return "this model takes guidance as an embedding (LCM-style), so its cells run one after another"
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
    members = request.members
    check_sweep(members)
    check_source(request.image)
    inpainting = request.mask is not None
    if inpainting:
        check_inpaint(_single_inpaint(request, members[0]))

    # 2. What the pipeline renders: the source at the output size, or the inpainting region at the working size
    if inpainting:
        region = inpaint_region(_single_inpaint(request, members[0]))
        work_image, work_mask = region.image, region.mask
    else:
        width, height = output_size(request.image.width, request.image.height, request.max_side)
        work_image, work_mask = request.image.convert("RGB"), None
        if work_image.size != (width, height):
            work_image = work_image.resize((width, height), Image.Resampling.LANCZOS)

    # 3. This request's pipeline: the cached base's weights, its own scheduler
    base = get_base_pipeline(ref)
    pipe = request_pipeline(base, StableDiffusionInpaintPipeline if inpainting else StableDiffusionImg2ImgPipeline)
    obstacle = one_pass_obstacle(pipe)
    if obstacle:
        return _run_separately(ref, request, obstacle, on_step=on_step, should_stop=should_stop)

    # 4. One pass for every cell
    with RUN_LOCK:
        if should_stop is not None and should_stop():
            raise RunCancelled("Cancelled before the sweep started.")
        started = time.perf_counter()
        images, unet_calls = _one_pass(pipe, work_image, work_mask, members, on_step=on_step, should_stop=should_stop)
        seconds = time.perf_counter() - started

    # 5. Inpainting: each cell back at the source's size, unmasked pixels kept as the options say
    if inpainting:
        images = [
            paste_back(_single_inpaint(request, m), region, image) for m, image in zip(members, images, strict=True)
        ]
    width, height = images[0].size
    return SweepResult(
        images=tuple(images),
        denoising_steps=tuple(m.denoising_steps for m in members),
        mode=ONE_PASS,
        reason="",
        unet_calls=unet_calls,
        scheduler=type(pipe.scheduler).__name__,
        width=width,
        height=height,
        device=base.device.type,
        dtype=str(base.dtype).removeprefix("torch."),
        seconds=round(seconds, 3),
    )


def _single_inpaint(request: SweepRequest, member: Img2ImgParams) -> InpaintRequest:
    return InpaintRequest(request.image, request.mask, member, request.inpaint, max_side=request.max_side)


@torch.no_grad()
def _one_pass(
    pipe: StableDiffusionImg2ImgPipeline | StableDiffusionInpaintPipeline,
    source: Image.Image,
    mask: Image.Image | None,
    members: tuple[Img2ImgParams, ...],
    *,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[list[Image.Image], int]:
    """The shared loop. With a mask it follows StableDiffusionInpaintPipeline: 4-channel UNets get the
    re-noised source blended in outside the mask after every step, 9-channel (inpainting) UNets get the
    mask and the masked source's latents as extra input channels."""
    device, dtype = pipe.device, pipe.unet.dtype
    steps = members[0].steps
    uses_guidance = [m.guidance > 1 for m in members]
    any_guidance = any(uses_guidance)
    scaling = pipe.vae.config.scaling_factor
    unet_channels = pipe.unet.config.in_channels

    # 1. Encode the prompt once (the negative prompt too when any member uses classifier-free guidance)
    positive, negative = pipe.encode_prompt(
        members[0].prompt,
        device,
        1,
        any_guidance,
        negative_prompt=members[0].negative_prompt or None,
    )

    # 2. Encode the source (and the masked source) once: the VAE's distribution is deterministic, each
    # member samples from it with its own generator
    width, height = source.size
    pixels = pipe.image_processor.preprocess(source, height=height, width=width).to(dtype=torch.float32)
    encoded = pipe.vae.encode(pixels.to(device=device, dtype=dtype))
    if mask is not None:
        mask_condition = pipe.mask_processor.preprocess(mask, height=height, width=width)
        masked_encoded = pipe.vae.encode((pixels * (mask_condition < 0.5)).to(device=device, dtype=dtype))
        latent_size = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        mask_latent = torch.nn.functional.interpolate(mask_condition, size=latent_size).to(device=device, dtype=dtype)

    # 3. Each member: its generator, its scheduler (set to the shared N-step schedule), its start step,
    # and its starting latents — drawn in a single run's order (VAE sample, noise, [masked-source sample]).
    schedulers, starts, latents, step_kwargs, clean, noises, masked = [], [], [], [], [], [], []
    for member in members:
        generator = torch.Generator("cpu").manual_seed(member.seed)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        start = (steps - member.denoising_steps) * scheduler.order  # get_timesteps' t_start × order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        first_timestep = scheduler.timesteps[start : start + 1]
        full_strength = member.strength == 1.0
        # The inpaint pipeline skips the source sample at full strength when the UNet does not need it.
        sample_source = mask is None or unet_channels == 4 or not full_strength
        image_latents = scaling * retrieve_latents(encoded, generator=generator) if sample_source else None
        shape = (1, pipe.vae.config.latent_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if mask is not None and full_strength:
            start_latents = noise * scheduler.init_noise_sigma
        else:
            start_latents = scheduler.add_noise(image_latents, noise, first_timestep)
        if mask is not None:
            masked.append(scaling * retrieve_latents(masked_encoded, generator=generator))
        latents.append(start_latents)
        clean.append(image_latents)
        noises.append(noise)
        schedulers.append(scheduler)
        starts.append(start)
        step_kwargs.append(pipe.prepare_extra_step_kwargs(generator, 0.0))

    # 4. One loop over the shared schedule from the earliest start; members join at their start step
    timesteps = schedulers[0].timesteps
    first = min(starts)
    total = len(timesteps) - first
    unet_calls = 0
    for index in range(first, len(timesteps)):
        t = timesteps[index]
        active = [m for m in range(len(members)) if starts[m] <= index]
        rows = [schedulers[m].scale_model_input(latents[m], t) for m in active]
        if mask is not None and unet_channels == 9:
            rows = [torch.cat([row, mask_latent, masked[m]], dim=1) for row, m in zip(rows, active, strict=True)]
        scaled = torch.cat(rows)
        count = len(active)
        if any_guidance:
            model_input = torch.cat([scaled, scaled])
            context = torch.cat([negative.expand(count, -1, -1), positive.expand(count, -1, -1)])
        else:
            model_input, context = scaled, positive.expand(count, -1, -1)
        prediction = pipe.unet(model_input, t, encoder_hidden_states=context, return_dict=False)[0]
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
                if index < len(timesteps) - 1:
                    proper = schedulers[m].add_noise(proper, noises[m], torch.tensor([timesteps[index + 1]]))
                latents[m] = (1 - mask_latent) * proper + mask_latent * latents[m]
        step = index - first + 1
        if on_step is not None:
            on_step(step, total)
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled after step {step} of {total}.")

    # 5. Decode every member in one batch
    decoded = pipe.vae.decode(torch.cat(latents) / scaling, return_dict=False)[0]
    images = pipe.image_processor.postprocess(decoded, output_type="pil", do_denormalize=[True] * len(members))
    return images, unet_calls


def _run_separately(
    ref: ModelRef,
    request: SweepRequest,
    reason: str,
    *,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> SweepResult:
    """The fallback: each member as its own img2img run; progress counts every member's steps."""
    total = sum(m.denoising_steps for m in request.members)
    done = 0

    def member_step(step: int, _member_total: int) -> None:
        if on_step is not None:
            on_step(done + step, total)

    results = []
    for member in request.members:
        if request.mask is not None:
            result = run_inpaint(ref, _single_inpaint(request, member), on_step=member_step, should_stop=should_stop)
        else:
            single = Img2ImgRequest(image=request.image, params=member, max_side=request.max_side)
            result = run_img2img(ref, single, on_step=member_step, should_stop=should_stop)
        results.append(result)
        done += member.denoising_steps
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
    )
