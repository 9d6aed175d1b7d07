"""What a run asks for (task, params, inpaint and ControlNet options) and its checks.

Torch-free, so the web app validates a request before storing anything or loading a model.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from pipelines.errors import PipelineInputError

# The limits every run is checked against. The web forms' widgets take their ranges from these same
# constants, so a value the studio accepts anywhere (a recipe, a preset, a sweep cell) fits every form.
MAX_PROMPT_CHARS = 2000
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_STRENGTH = 1.0
MAX_SEED = 2**32 - 1
MAX_CONTROL_SCALE = 2.0  # ControlNet conditioning scale
MAX_CANNY_THRESHOLD = 255
# The VAE maps 8×8 pixels to one latent, so both sides must be multiples of 8.
SIZE_MULTIPLE = 8
# The longest side an upscale makes: the studio's largest image (studio.media.validation.MAX_SIDE). 2× takes sources up
# to 2048 px, 4× up to 1024 px. Decoding a whole 4096² output at once needs more memory than a 24 GB GPU has: outputs
# above VAE_TILING_PIXELS decode in tiles (pipelines.denoise.vae_tiling).
MAX_UPSCALED_SIDE = 4096
# Outputs with more pixels than this encode and decode through the VAE in overlapping tiles (and a batch of them one
# image at a time): memory stays that of a tile, at a small cost in time and seams blended over the overlap. Up to
# 2048² (every size the studio made before 4096-px upscales), the VAE works on the whole image: pixels unchanged.
VAE_TILING_PIXELS = 2048 * 2048
UPSCALE_FACTORS = (2, 4)
# What each upscaler's models take, px per side: sides a multiple of SOURCE_MULTIPLE, at least MIN_SOURCE_SIDE.
# 2×: the source is encoded to latents at 1/8, doubled, then halved three times by the K-UNet, whose
#     downsamplers floor odd sizes (the skip connections then no longer match): 8 / 2 × 2³ = 32 px. Its
#     deepest level reflect-pads by 1, so it needs 2 latents there: 64 px.
# 4×: the UNet runs at the source's own resolution and takes any size; ×8 as everywhere else in the studio.
SOURCE_MULTIPLE = {2: 32, 4: SIZE_MULTIPLE}
MIN_SOURCE_SIDE = {2: 64, 4: SIZE_MULTIPLE}
MAX_SWEEP_MEMBERS = 12  # cells of one strength sweep
MAX_BATCH_JOBS = 16  # jobs in one batched denoising loop (pipelines.batch; STUDIO_BATCH_MAX)
# STUDIO_ATTENTION: the attention backends of diffusers 0.42 (diffusers.models.attention_dispatch.AttentionBackendName)
# a studio may select, with the Python package each needs beyond torch (None: torch's own scaled-dot-product attention,
# which may pick flash, memory-efficient, cuDNN or math kernels itself; the _native_* names force one). The *_hub
# backends download kernels at run time and are left out: a worker must not need the network.
ATTENTION_BACKENDS: dict[str, str | None] = {
    "native": None,
    "_native_flash": None,
    "_native_efficient": None,
    "_native_cudnn": None,
    "_native_math": None,
    "flex": None,
    "flash": "flash_attn",
    "flash_varlen": "flash_attn",
    "_flash_3": "flash_attn_interface",
    "_flash_varlen_3": "flash_attn_interface",
    "sage": "sageattention",
    "sage_varlen": "sageattention",
    "xformers": "xformers",
}
# The share of a GPU's free memory batches may fill when STUDIO_BATCH_MAX is unset (choose_batch_max): the rest
# absorbs what the footprint measured at one size misses at another (allocator fragmentation, cuDNN workspaces).
BATCH_MEMORY_SHARE = 0.8
MAX_MASK_BLUR = 64
MAX_MASK_PADDING = 256
MAX_NOISE_LEVEL = 350  # the 4× upscaler's max_noise_level
# Outpainting: the largest canvas side (the studio's largest image, studio.media.validation.MAX_SIDE), and how far
# the repainted area reaches into the source to hide the seam.
MAX_CANVAS_SIDE = 4096
MAX_SEAM = 64
# LoRAs: how many one run applies, and how strongly each may (negative weights push away from what it learnt).
MAX_LORAS = 3
MAX_LORA_WEIGHT = 2.0
# IP-Adapter reference images: past ~1 the reference overrides the prompt; 1.5 leaves room to push it.
MAX_IP_ADAPTER_SCALE = 1.5
IP_ADAPTER_SCALE_STEP = 0.05  # the scale slider's step
DEFAULT_NOISE_LEVEL = 20

# Every numeric setting a run carries (a recipe's key, also in its `control`, `inpaint` and `outpaint` tables), with the
# lowest and highest value the studio accepts, inclusive. The checks below, the forms' widgets and the tests
# that load every value into every form all read this table. Steps are per quality tier (studio.billing.pricing).
LIMITS: dict[str, tuple[float, float]] = {
    "strength": (0.0, MAX_STRENGTH),
    "guidance": (0.0, MAX_GUIDANCE),
    "seed": (0, MAX_SEED),
    "noise_level": (0, MAX_NOISE_LEVEL),
    "conditioning_scale": (0.0, MAX_CONTROL_SCALE),
    "low_threshold": (0, MAX_CANNY_THRESHOLD - 1),  # below the high threshold
    "high_threshold": (1, MAX_CANNY_THRESHOLD),
    "mask_blur": (0, MAX_MASK_BLUR),
    "padding": (0, MAX_MASK_PADDING),
    "seam": (0, MAX_SEAM),
    "lora_weight": (-MAX_LORA_WEIGHT, MAX_LORA_WEIGHT),  # each of a recipe's `loras`
    "ip_adapter_scale": (0.0, MAX_IP_ADAPTER_SCALE),  # a recipe's `reference` scale; 0 gives the base's pixels
}


def check_limit(name: str, value: float, label: str, unit: str = "") -> None:
    """Refuse `value` outside LIMITS[name], saying `label` must be between the two ends (in `unit`)."""
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise PipelineInputError(f"{label} must be between {_shown(low)} and {_shown(high)}{unit}, got {value}.")


def _shown(number: float) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


class Task(StrEnum):
    img2img = "img2img"
    inpaint = "inpaint"
    upscale_2x = "upscale_2x"
    upscale_4x = "upscale_4x"
    edit = "edit"  # an instruction instead of a strength (FLUX.1 Kontext, Qwen-Image-Edit)

    @property
    def upscale_factor(self) -> int | None:
        return {Task.upscale_2x: 2, Task.upscale_4x: 4}.get(self)

    @property
    def label(self) -> str:
        return {
            Task.img2img: "Image to image",
            Task.inpaint: "Inpaint",
            Task.upscale_2x: "Upscale 2×",
            Task.upscale_4x: "Upscale 4×",
            Task.edit: "Edit",
        }[self]


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

    def check(self, *, uses_strength: bool = True, needs_prompt: bool = True) -> None:
        if needs_prompt and not self.prompt.strip():
            raise PipelineInputError("Write a prompt: it describes what the result should look like.")
        if len(self.prompt) > MAX_PROMPT_CHARS or len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise PipelineInputError(f"Prompts are limited to {MAX_PROMPT_CHARS} characters.")
        check_limit("strength", self.strength, "Strength")
        if not 1 <= self.steps <= MAX_STEPS:
            raise PipelineInputError(f"Steps must be between 1 and {MAX_STEPS}, got {self.steps}.")
        if uses_strength and self.denoising_steps < 1:
            raise PipelineInputError(
                f"Strength {self.strength} with {self.steps} steps runs no denoising step "
                f"(int(steps × strength) = 0); raise the strength or the steps."
            )
        check_limit("guidance", self.guidance, "Guidance")
        check_limit("seed", self.seed, "Seed")


class Guide(StrEnum):
    """ControlNet guides made by controlnet-aux detectors that need no downloaded weights."""

    canny = "canny"
    lineart = "lineart"
    shuffle = "shuffle"

    @property
    def label(self) -> str:
        return {Guide.canny: "Edges (canny)", Guide.lineart: "Line art", Guide.shuffle: "Content shuffle"}[self]


@dataclass(frozen=True)
class ControlParams:
    """Structure guidance: a guide image made from the source steers the run through a ControlNet."""

    model: str  # the ControlNet: "preview-controlnet", a hub id or a folder
    guide: Guide = Guide.canny
    conditioning_scale: float = 1.0
    low_threshold: int = 100  # canny only
    high_threshold: int = 200  # canny only

    def check(self) -> None:
        check_limit("conditioning_scale", self.conditioning_scale, "ControlNet strength")
        if not 0 <= self.low_threshold < self.high_threshold <= MAX_CANNY_THRESHOLD:
            raise PipelineInputError(
                f"Edge thresholds need 0 ≤ low < high ≤ {MAX_CANNY_THRESHOLD}, "
                f"got low {self.low_threshold} and high {self.high_threshold}."
            )


@dataclass(frozen=True)
class InpaintParams:
    """How a mask is applied (the A1111 options)."""

    mask_blur: int = 4  # feather of the mask's edge, px
    only_masked: bool = False  # crop to the mask's box plus padding, run at full resolution, paste back
    padding: int = 32  # px around the mask's box when only_masked
    keep_unmasked: bool = True  # pixels outside the (blurred) mask are the source's, byte for byte
    # Per-pixel strength ("soft inpainting", as Differential Diffusion): the mask is grey, and a pixel of value v
    # runs only the last v/255 of the run's denoising steps (0 keeps it, 255 repaints it at the run's strength).
    soft: bool = False

    def check(self) -> None:
        check_limit("mask_blur", self.mask_blur, "Mask blur", " px")
        check_limit("padding", self.padding, "Masked-area padding", " px")


class Placement(StrEnum):
    """Where the source sits on an outpainting canvas (the new area is on the other sides)."""

    centre = "centre"
    left = "left"
    right = "right"
    top = "top"
    bottom = "bottom"


class Fill(StrEnum):
    """What the new area of an outpainting canvas starts as, before the model repaints it."""

    blur = "blur"  # the source's edges extended outwards and blurred: colours and light to continue
    white = "white"  # plain white: a product on a white background (marketplaces)

    @property
    def label(self) -> str:
        return {Fill.blur: "Extended edges (blurred)", Fill.white: "White"}[self]


# The aspect ratios a canvas may take ("W:H"), or CUSTOM: an exact width × height in px.
ASPECTS = ("1:1", "4:5", "9:16", "16:9")
CUSTOM = "custom"


@dataclass(frozen=True)
class OutpaintParams:
    """Outpainting ("expand"): the source on a larger canvas of another format, the new area repainted.

    The canvas is the smallest one of `aspect` that holds the source at its own size (or exactly width × height
    with CUSTOM); pipelines.outpaint turns this into the canvas, the mask and the first fill.
    """

    aspect: str = "1:1"  # one of ASPECTS, or CUSTOM
    width: int = 0  # CUSTOM only: the canvas in px
    height: int = 0
    placement: Placement = Placement.centre
    fill: Fill = Fill.blur
    seam: int = 8  # px the repainted area reaches into the source, fading out (a soft seam)

    def check(self) -> None:
        if self.aspect not in (*ASPECTS, CUSTOM):
            raise PipelineInputError(
                f"Unknown format {self.aspect!r}: choose one of {', '.join(ASPECTS)} or a custom size."
            )
        if self.aspect == CUSTOM:
            for side, value in (("width", self.width), ("height", self.height)):
                if not SIZE_MULTIPLE <= value <= MAX_CANVAS_SIDE:
                    raise PipelineInputError(
                        f"A custom {side} must be between {SIZE_MULTIPLE} and {MAX_CANVAS_SIDE} px, got {value}."
                    )
        check_limit("seam", self.seam, "Seam", " px")


@dataclass(frozen=True)
class RunSpec:
    """Everything a user chose for one run; stored on the job (`Job.params`) and in the result's recipe."""

    task: Task
    params: Img2ImgParams
    control: ControlParams | None = None  # img2img and inpaint only
    inpaint: InpaintParams | None = None  # inpaint only
    noise_level: int = DEFAULT_NOISE_LEVEL  # 4× upscaler only: noise added to the low-res input
    outpaint: OutpaintParams | None = None  # inpaint only: expand the source to another format, no mask given

    @property
    def denoising_steps(self) -> int:
        """The steps that actually run: int(steps × strength) from a source, every step when upscaling."""
        return self.params.steps if self.task.upscale_factor is not None else self.params.denoising_steps

    def check(self) -> None:
        """Everything a run needs: values in range, a prompt and at least one denoising step."""
        upscaling = self.task.upscale_factor is not None
        self.params.check(uses_strength=not upscaling, needs_prompt=not upscaling)
        self._check_options()

    def check_ranges(self) -> None:
        """Every value within the studio's limits; a form being filled in may still lack a prompt or steps."""
        self.params.check(uses_strength=False, needs_prompt=False)
        self._check_options()

    def _check_options(self) -> None:
        upscaling = self.task.upscale_factor is not None
        if self.control is not None:
            if upscaling:
                raise PipelineInputError("ControlNet guidance applies to image-to-image and inpainting, not upscaling.")
            self.control.check()
        if (self.inpaint is not None) != (self.task == Task.inpaint):
            raise PipelineInputError("Inpaint options go with the inpaint task, and it needs them.")
        if self.inpaint is not None:
            self.inpaint.check()
        if self.outpaint is not None:
            self._check_outpaint()
        check_limit("noise_level", self.noise_level, "Noise level")

    def _check_outpaint(self) -> None:
        """Outpainting is inpainting a mask the canvas makes: its seam fades the mask out, so the options that would
        reshape that mask (a blur, a soft mask, an only-masked crop) do not apply."""
        inpaint = self.inpaint
        if self.task != Task.inpaint or inpaint is None:
            raise PipelineInputError("Expanding to a format is an inpainting run.")
        if inpaint.soft or inpaint.only_masked or inpaint.mask_blur:
            raise PipelineInputError(
                "Expanding to a format takes no mask blur, soft mask or only-masked crop: its seam softens the edge."
            )
        self.outpaint.check()

    def to_dict(self) -> dict[str, Any]:
        data = {
            "task": self.task.value,
            **asdict(self.params),
            "control": asdict(self.control) if self.control else None,
            "inpaint": _inpaint_dict(self.inpaint) if self.inpaint else None,
            "noise_level": self.noise_level,
        }
        # Written only for outpainting, so every other recipe reads exactly as before it existed.
        if self.outpaint is not None:
            data["outpaint"] = asdict(self.outpaint)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Read back `to_dict` (or a recipe, which holds it plus what ran); unknown keys are ignored.

        A recipe may come from an uploaded file, so every value's type is checked here: a wrong one is a
        PipelineInputError naming the key, never a TypeError deep inside a check or a pipeline.
        """
        if not isinstance(data, dict):
            raise PipelineInputError(f"Not a usable recipe: expected a JSON object, got {type(data).__name__}.")
        try:
            control, inpaint, outpaint = data.get("control"), data.get("inpaint"), data.get("outpaint")
            return cls(
                task=Task(_typed(data, "task", str, Task.img2img.value)),
                params=_read(Img2ImgParams, data, "recipe"),
                control=_read(ControlParams, _table(control, "control"), "control") if control else None,
                inpaint=_read(InpaintParams, _table(inpaint, "inpaint"), "inpaint") if inpaint else None,
                noise_level=_typed(data, "noise_level", int, DEFAULT_NOISE_LEVEL),
                outpaint=_read(OutpaintParams, _table(outpaint, "outpaint"), "outpaint") if outpaint else None,
            )
        except ValueError as exc:  # PipelineInputError, or an unknown task, guide, placement or fill
            raise PipelineInputError(f"Not a usable recipe: {exc}") from exc


def _inpaint_dict(inpaint: InpaintParams) -> dict[str, Any]:
    """The inpaint options for a recipe. `soft` is written only when on, so every recipe of a binary-mask run reads
    exactly as before soft inpainting existed (and from_dict reads a missing `soft` as off)."""
    options = asdict(inpaint)
    if not inpaint.soft:
        del options["soft"]
    return options


def _table(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PipelineInputError(f"{key} should be a table of settings, got {value!r}.")
    return value


def _typed(data: dict[str, Any], key: str, kind: type, default: object = MISSING) -> Any:
    """data[key] if it is a `kind` (an int counts as a float, a bool as neither); `default` if absent."""
    if key not in data:
        if default is MISSING:
            raise PipelineInputError(f"{key} is missing.")
        return default
    value = data[key]
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and numeric and math.isfinite(value):
        return float(value)
    if kind is not float and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    name = {str: "text", int: "a whole number", float: "a finite number", bool: "true or false"}[kind]
    raise PipelineInputError(f"{key} should be {name}, got {value!r}.")


def _read(cls: type, data: dict[str, Any], where: str):
    """A `cls` dataclass from `data`, every field type-checked (unknown keys in `data` ignored)."""
    values = {}
    for field in fields(cls):
        kind = _ENUMS.get(field.type) or {"str": str, "int": int, "float": float, "bool": bool}[field.type]
        value = _typed(data, field.name, str if field.type in _ENUMS else kind, field.default)
        values[field.name] = kind(value) if field.type in _ENUMS else value
    return cls(**values)


# The enumerations a recipe's tables hold, by their annotation: read as text, then checked.
_ENUMS = {"Guide": Guide, "Placement": Placement, "Fill": Fill}


def check_upscale_size(width: int, height: int, factor: int) -> None:
    """Refuse sources whose upscaled output would exceed MAX_UPSCALED_SIDE (the message says the limit)."""
    limit = MAX_UPSCALED_SIDE // factor
    if max(width, height) > limit:
        raise PipelineInputError(
            f"Upscale {factor}× takes sources up to {limit} px on the long side (output up to "
            f"{MAX_UPSCALED_SIDE} px, the studio's largest image); this one is {width}×{height}. "
            "Resize it first, or use a smaller factor."
        )


def upscale_source_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """The size the source is resized to before upscaling: each side rounded down to what the upscaler takes."""
    multiple = SOURCE_MULTIPLE[factor]
    return width // multiple * multiple, height // multiple * multiple


def output_size(width: int, height: int, max_side: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Result size: the source's aspect, scaled down (never up) to fit max_side, sides rounded down to `multiple`."""
    if width < 1 or height < 1:
        raise PipelineInputError(f"The source image is empty ({width}×{height} px).")
    if max_side < multiple:
        raise PipelineInputError(f"The output size cap must be at least {multiple} px, got {max_side}.")
    long_side = max(width, height)
    if long_side > max_side:
        # Integer arithmetic, so the long side lands exactly on max_side.
        width, height = width * max_side // long_side, height * max_side // long_side
    return max(multiple, width // multiple * multiple), max(multiple, height // multiple * multiple)


_MEMORY_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_MEMORY_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class MemoryBudget:
    """How much memory a process's loaded models may take (STUDIO_MODEL_MEMORY): an absolute `limit` in bytes, or
    else `fraction` of the device's memory (of RAM on CPU). pipelines.cache evicts least recently used models to
    stay within it."""

    limit: int | None = None
    fraction: float = 0.9

    @classmethod
    def parse(cls, text: str) -> MemoryBudget:
        """Read a budget: "" (the default: 90 %), "75%", "24GB", "24 GiB", "512MB" or a number of bytes."""
        text = text.strip().lower().replace(" ", "")
        if not text:
            return cls()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = math.nan
            if not 0 < percent <= 100:
                raise PipelineInputError(f"A model memory budget in percent is between 0 and 100, got {text!r}.")
            return cls(fraction=percent / 100)
        number = text.rstrip("kmgtib")
        unit = text[len(number) :]
        try:
            amount = float(number)
        except ValueError:
            amount = math.nan
        if unit not in _MEMORY_UNITS or not math.isfinite(amount) or amount <= 0:
            raise PipelineInputError(
                f"Model memory budget {text!r} is not a size: write e.g. '90%', '24GB', '512MiB' or a number of bytes."
            )
        return cls(limit=int(amount * _MEMORY_UNITS[unit]))

    def bytes_of(self, total: int) -> int:
        """The budget in bytes on a device with `total` bytes of memory."""
        return self.limit if self.limit is not None else int(total * self.fraction)


def choose_batch_max(*, free_bytes: int, per_image_bytes: int | None, share: float = BATCH_MEMORY_SHARE) -> int:
    """The most jobs one batched loop takes on a GPU with `free_bytes` free when each image of the batch adds
    `per_image_bytes` at its peak (its latents, activations and decode; measured by pipelines.footprint): as many as
    fit in `share` of the free memory, 1 to MAX_BATCH_JOBS. 1 while the footprint is unknown (the first run of a
    model at a size measures it)."""
    if per_image_bytes is None or per_image_bytes <= 0:
        return 1
    return max(1, min(MAX_BATCH_JOBS, int(free_bytes * share) // per_image_bytes))
