"""FLUX.1 strength sweeps in one pass: every member shares one loop over the flow-matching schedule and one
batched transformer call per step (pipelines.sweep runs Stable Diffusion's UNet families; this is FLUX's).

FLUX's schedule shifts with the image's token count, so strengths' schedules are suffixes of one schedule only at
one size and step count: a sweep has both (one source, one step count). A member of strength s starts at step
int(N − N·s) of it (FluxImg2ImgPipeline.get_timesteps) and from then on rides in the batched call with the members
already running. Each member keeps what makes its pixels its own, drawn in a single run's order from a generator
seeded with its seed: the VAE sample of the source, then the noise. Its guidance goes into the batched guidance
embedding per row. FlowMatchEuler steps are stateless but for a step index, so each member keeps a scheduler of its
own as a single run does. The only difference from single runs is batching (float rounding in the transformer and
the VAE decode)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.flux.pipeline_flux_img2img import calculate_shift, retrieve_latents, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from pipelines.errors import RunCancelled
from pipelines.params import Img2ImgParams


@torch.no_grad()
def flux_one_pass(
    pipe: DiffusionPipeline,
    source: Image.Image,
    members: tuple[Img2ImgParams, ...],
    *,
    steps_of: Callable[[Img2ImgParams], int],
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[list[Image.Image], int]:
    """Every member of a FLUX.1 img2img sweep of `source` (already at the render size) in one loop; returns the
    images in member order and the number of transformer calls. `steps_of(member)` is the family's step count.
    Callers hold RUN_LOCK."""
    device = pipe._execution_device
    width, height = source.size
    steps = members[0].steps

    # 1. Encode the prompt once (FLUX has no negative prompt: its guidance is an embedding)
    prompt_embeds, pooled_embeds, text_ids = pipe.encode_prompt(
        prompt=members[0].prompt, prompt_2=None, device=device, num_images_per_prompt=1
    )
    dtype = prompt_embeds.dtype

    # 2. The shared schedule at this size, and each member's scheduler and start step
    sigmas = np.linspace(1.0, 1 / steps, steps)
    config = pipe.scheduler.config
    image_tokens = (height // pipe.vae_scale_factor // 2) * (width // pipe.vae_scale_factor // 2)
    mu = calculate_shift(
        image_tokens,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    schedulers, starts = [], []
    for member in members:
        scheduler = type(pipe.scheduler).from_config(config)
        retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
        start = steps - steps_of(member)
        scheduler.set_begin_index(start)
        schedulers.append(scheduler)
        starts.append(start)
    timesteps = schedulers[0].timesteps

    # 3. Encode the source once; each member samples its latents and noise with its own generator
    pixels = pipe.image_processor.preprocess(source, height=height, width=width).to(device=device, dtype=dtype)
    encoded = pipe.vae.encode(pixels)
    channels = pipe.transformer.config.in_channels // 4
    latent_height, latent_width = (
        2 * (height // (pipe.vae_scale_factor * 2)),
        2 * (width // (pipe.vae_scale_factor * 2)),
    )
    shape = (1, channels, latent_height, latent_width)
    image_ids = pipe._prepare_latent_image_ids(1, latent_height // 2, latent_width // 2, device, dtype)
    latents: list[torch.Tensor] = []
    for member, scheduler, start in zip(members, schedulers, starts, strict=True):
        generator = torch.Generator("cpu").manual_seed(member.seed)
        image_latents = retrieve_latents(encoded, generator=generator)
        image_latents = (image_latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        noised = scheduler.scale_noise(image_latents, timesteps[start : start + 1], noise)
        latents.append(pipe._pack_latents(noised, 1, channels, latent_height, latent_width))

    # 4. The shared loop: at step k, the members that have started go through one batched call
    calls = 0
    first = min(starts)
    total = len(timesteps) - first  # the longest member's steps
    for index in range(first, len(timesteps)):
        timestep = timesteps[index]
        active = [m for m, start in enumerate(starts) if index >= start]
        if active:
            batch = torch.cat([latents[m] for m in active])
            guidance = None
            if pipe.transformer.config.guidance_embeds:
                guidance = torch.tensor([members[m].guidance for m in active], device=device, dtype=torch.float32)
            prediction = pipe.transformer(
                hidden_states=batch,
                timestep=timestep.expand(len(active)).to(batch.dtype) / 1000,
                guidance=guidance,
                pooled_projections=pooled_embeds.expand(len(active), -1),
                encoder_hidden_states=prompt_embeds.expand(len(active), -1, -1),
                txt_ids=text_ids,
                img_ids=image_ids,
                return_dict=False,
            )[0]
            calls += 1
            for row, m in enumerate(active):
                latents[m] = schedulers[m].step(prediction[row : row + 1], timestep, latents[m], return_dict=False)[0]
        done = index - first + 1
        if on_step is not None:
            on_step(done, total)
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled after step {done} of {total}.")

    # 5. Decode every member in one batch
    unpacked = torch.cat([pipe._unpack_latents(m, height, width, pipe.vae_scale_factor) for m in latents])
    unpacked = unpacked / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    decoded = pipe.vae.decode(unpacked, return_dict=False)[0]
    return pipe.image_processor.postprocess(decoded, output_type="pil"), calls
