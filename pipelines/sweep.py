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
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline, StableDiffusionImg2ImgPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from pipelines.cache import RUN_LOCK, get_base_pipeline, request_pipeline
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.img2img import Img2ImgRequest, check_source, run_img2img
from pipelines.params import MAX_SWEEP_MEMBERS, Img2ImgParams, output_size
from pipelines.registry import ModelRef

ONE_PASS = "one-pass"
SEPARATE = "separate"


@dataclass(frozen=True)
class SweepRequest:
    image: Image.Image  # the source
    members: tuple[
        Img2ImgParams, ...
    ]  # one per cell: same prompt, negative prompt and steps; own strength, seed, guidance
    max_side: int = 1024


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
    width, height = output_size(request.image.width, request.image.height, request.max_side)
    source = request.image.convert("RGB")
    if source.size != (width, height):
        source = source.resize((width, height), Image.Resampling.LANCZOS)

    # 2. This request's pipeline: the cached base's weights, its own scheduler
    base = get_base_pipeline(ref)
    pipe = request_pipeline(base, StableDiffusionImg2ImgPipeline)
    obstacle = one_pass_obstacle(pipe)
    if obstacle:
        return _run_separately(ref, request, obstacle, on_step=on_step, should_stop=should_stop)

    with RUN_LOCK:
        if should_stop is not None and should_stop():
            raise RunCancelled("Cancelled before the sweep started.")
        started = time.perf_counter()
        images, unet_calls = _one_pass(pipe, source, members, on_step=on_step, should_stop=should_stop)
        seconds = time.perf_counter() - started
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


@torch.no_grad()
def _one_pass(
    pipe: StableDiffusionImg2ImgPipeline,
    source: Image.Image,
    members: tuple[Img2ImgParams, ...],
    *,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[list[Image.Image], int]:
    device, dtype = pipe.device, pipe.unet.dtype
    steps = members[0].steps
    uses_guidance = [m.guidance > 1 for m in members]
    any_guidance = any(uses_guidance)

    # 1. Encode the prompt once (the negative prompt too when any member uses classifier-free guidance)
    positive, negative = pipe.encode_prompt(
        members[0].prompt,
        device,
        1,
        any_guidance,
        negative_prompt=members[0].negative_prompt or None,
    )

    # 2. Encode the source once: the VAE's distribution is deterministic, each member samples from it
    pixels = pipe.image_processor.preprocess(source).to(device=device, dtype=dtype)
    encoded = pipe.vae.encode(pixels)

    # 3. Each member: its generator, its scheduler (set to the shared N-step schedule), its start step,
    # and its starting latents — drawn in a single run's order: VAE sample, then noise, added at its start.
    generators, schedulers, starts, latents, step_kwargs = [], [], [], [], []
    for member in members:
        generator = torch.Generator("cpu").manual_seed(member.seed)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        start = (steps - member.denoising_steps) * scheduler.order  # get_timesteps' t_start × order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        clean = pipe.vae.config.scaling_factor * retrieve_latents(encoded, generator=generator)
        noise = randn_tensor(clean.shape, generator=generator, device=device, dtype=dtype)
        latents.append(scheduler.add_noise(clean, noise, scheduler.timesteps[start : start + 1]))
        generators.append(generator)
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
        scaled = torch.cat([schedulers[m].scale_model_input(latents[m], t) for m in active])
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
        step = index - first + 1
        if on_step is not None:
            on_step(step, total)
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled after step {step} of {total}.")

    # 5. Decode every member in one batch
    decoded = pipe.vae.decode(torch.cat(latents) / pipe.vae.config.scaling_factor, return_dict=False)[0]
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
        single = Img2ImgRequest(image=request.image, params=member, max_side=request.max_side)
        results.append(run_img2img(ref, single, on_step=member_step, should_stop=should_stop))
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
