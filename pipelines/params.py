"""Img2img parameters and their checks, torch-free so the web app validates before storing anything."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.errors import PipelineInputError

MAX_PROMPT_CHARS = 2000
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_SEED = 2**32 - 1
# The VAE maps 8×8 pixels to one latent, so both sides must be multiples of 8.
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class Img2ImgParams:
    """What a user chooses for one img2img run; same params + same source + same model → same pixels."""

    prompt: str
    negative_prompt: str = ""
    strength: float = 0.6
    steps: int = 20
    guidance: float = 7.5
    seed: int = 0

    @property
    def denoising_steps(self) -> int:
        # diffusers runs the last int(steps * strength) steps of the schedule (get_timesteps).
        return min(int(self.steps * self.strength), self.steps)

    def check(self) -> None:
        if not self.prompt.strip():
            raise PipelineInputError("Write a prompt: it describes what the result should look like.")
        if len(self.prompt) > MAX_PROMPT_CHARS or len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise PipelineInputError(f"Prompts are limited to {MAX_PROMPT_CHARS} characters.")
        if not 0.0 <= self.strength <= 1.0:
            raise PipelineInputError(f"Strength must be between 0 and 1, got {self.strength}.")
        if not 1 <= self.steps <= MAX_STEPS:
            raise PipelineInputError(f"Steps must be between 1 and {MAX_STEPS}, got {self.steps}.")
        if self.denoising_steps < 1:
            raise PipelineInputError(
                f"Strength {self.strength} with {self.steps} steps runs no denoising step "
                f"(int(steps × strength) = 0); raise the strength or the steps."
            )
        if not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise PipelineInputError(f"Guidance must be between 0 and {MAX_GUIDANCE:g}, got {self.guidance}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise PipelineInputError(f"Seed must be between 0 and {MAX_SEED}, got {self.seed}.")


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Result size: the source's aspect, scaled down (never up) to fit max_side, sides rounded down to ×8."""
    if width < 1 or height < 1:
        raise PipelineInputError(f"The source image is empty ({width}×{height} px).")
    if max_side < SIZE_MULTIPLE:
        raise PipelineInputError(f"The output size cap must be at least {SIZE_MULTIPLE} px, got {max_side}.")
    long_side = max(width, height)
    if long_side > max_side:
        # Integer arithmetic, so the long side lands exactly on max_side.
        width, height = width * max_side // long_side, height * max_side // long_side
    return (
        max(SIZE_MULTIPLE, width // SIZE_MULTIPLE * SIZE_MULTIPLE),
        max(SIZE_MULTIPLE, height // SIZE_MULTIPLE * SIZE_MULTIPLE),
    )
