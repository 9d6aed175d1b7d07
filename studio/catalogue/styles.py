"""The style catalogue: styles and the models behind them, read from a TOML file admins edit.

The file (data/styles.toml, or STUDIO_CATALOGUE) is re-read whenever it changes on disk, so an
admin's edit shows up without a restart. A broken edit raises CatalogueError naming the entry.
Torch-free: availability is checked from the local Hugging Face cache, without loading anything.
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pipelines.families import BASE, CONTROLNET, DEFAULT_FAMILY, FAMILIES, Family
from pipelines.ip_adapters import IP_ADAPTER_FAMILIES
from pipelines.params import MAX_GUIDANCE, Guide, Task
from pipelines.registry import OFFLOAD_MODES, PREVIEW_MODELS
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.config import Settings
from studio.errors import ConfigError

# Base credits per run of a model (the quality tier and high resolution multiply it: studio.billing.pricing).
MIN_CREDITS, MAX_CREDITS = 1, 20


class CatalogueError(ConfigError):
    """The catalogue file is missing or malformed; the message says where."""


class ModelKind(StrEnum):
    sd = "sd"
    controlnet = "controlnet"
    upscaler_x2 = "upscaler_x2"
    upscaler_x4 = "upscaler_x4"

    @property
    def has_family(self) -> bool:
        """Whether models of this kind belong to a model family (the upscalers are pipelines of their own)."""
        return self in (ModelKind.sd, ModelKind.controlnet)

    @property
    def preview(self) -> str:
        """The tiny offline model of this kind in the default family (pipelines.registry.PREVIEW_MODELS)."""
        return {
            ModelKind.sd: "preview",
            ModelKind.controlnet: "preview-controlnet",
            ModelKind.upscaler_x2: "preview-upscaler-x2",
            ModelKind.upscaler_x4: "preview-upscaler-x4",
        }[self]

    @property
    def marker(self) -> str:
        """The file whose presence says a saved folder (or a cached hub snapshot) is complete."""
        return PREVIEW_MODELS[self.preview]


# The families the studio's forms, prices and progress handle: every family of pipelines.families (Stable
# Diffusion, FLUX.1, and the instruction editors FLUX.1 Kontext and Qwen-Image-Edit, which run Task.edit only).
STUDIO_FAMILIES = tuple(FAMILIES)

# The task each model kind can serve as the main model (an sd-kind model's family decides which of img2img,
# inpaint and edit it runs: Family.pipelines).
_TASK_KINDS = {
    Task.img2img: ModelKind.sd,
    Task.inpaint: ModelKind.sd,
    Task.edit: ModelKind.sd,
    Task.upscale_2x: ModelKind.upscaler_x2,
    Task.upscale_4x: ModelKind.upscaler_x4,
}
# The tasks the studio's pages run (Edit: pages/edit.py).
STUDIO_TASKS = tuple(_TASK_KINDS)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: ModelKind
    location: str  # hub id or folder
    about: str = ""
    family: str = DEFAULT_FAMILY  # a pipelines.families name (sd and controlnet models; upscalers keep the default)
    credits: int = 0  # base credits per run (0 for a ControlNet, which only steers another model's run)
    offload: str = "none"  # pipelines.registry.OFFLOAD_MODES: keep weights off the accelerator between uses
    licence: str = ""  # the weights' licence, shown on the Models page and with every style that runs them
    # A distilled model's schedule length (SD-Turbo, SDXL-Turbo, FLUX.1 [schnell]: a few steps; twenty blur or waste
    # them): where a form starts, in every quality tier. None: the tier's.
    steps: int | None = None

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]

    @property
    def preview(self) -> str:
        """The tiny offline model that stands in for this one in preview mode: its family's, of its kind."""
        if self.kind.has_family:
            return self.family_info.preview(CONTROLNET if self.kind is ModelKind.controlnet else BASE)
        return self.kind.preview


@dataclass(frozen=True)
class LoraEntry:
    """A LoRA users may add to runs of models of its family (studio.catalogue.loras: its file and hash)."""

    name: str
    location: str  # a local safetensors file, a folder holding pytorch_lora_weights.safetensors, or a hub id
    family: str  # the pipelines.families name of the models it was trained on
    about: str = ""
    sha256: str = ""  # pinned by an admin: a file that no longer hashes to it is refused ("": recorded per use)

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]


@dataclass(frozen=True)
class IpAdapterEntry:
    """An IP-Adapter that reads users' reference images on runs of models of its family (studio.catalogue.references:
    its files and hashes): a weights file and a CLIP image encoder, in a local folder or a hub repo."""

    name: str
    location: str  # a local folder or a hub id holding both
    weight_name: str  # the weights file's path inside it, e.g. models/ip-adapter_sd15.safetensors
    image_encoder: str  # the image encoder folder's path inside it, e.g. models/image_encoder
    family: str  # the pipelines.families name of the models it was trained on
    about: str = ""
    sha256: str = ""  # of the weights file, pinned by an admin ("": recorded per use)
    encoder_sha256: str = ""  # of the image encoder's model.safetensors, pinned by an admin ("": recorded per use)


@dataclass(frozen=True)
class Availability:
    ready: bool
    note: str  # "" when ready; otherwise what is missing and how to make it available


@dataclass(frozen=True)
class Style:
    id: str
    name: str
    description: str
    task: Task
    model: str  # a ModelEntry name
    prompt: str  # template with {prompt}
    negative_prompt: str
    strength: float
    guidance: float
    qualities: tuple[Quality, ...]
    credits: int  # its model's: a price follows what runs, not a style's label
    family: str = DEFAULT_FAMILY  # its model's (upscalers: the default): the form's prompt rules and step counts
    steps: int | None = None  # its model's schedule length where the catalogue gives one (ModelEntry.steps)

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]

    def prompt_for(self, user_prompt: str) -> str:
        """The template filled with what the user wrote; an empty prompt leaves no dangling commas."""
        return self.prompt.replace("{prompt}", user_prompt.strip()).strip(" ,")

    def negative_for(self, user_negative: str) -> str:
        return ", ".join(part for part in (user_negative.strip(), self.negative_prompt.strip()) if part)


@dataclass(frozen=True)
class Catalogue:
    models: dict[str, ModelEntry]
    styles: dict[str, Style]  # in file order
    controlnets: dict[Guide, dict[str, str]]  # guide → family → ModelEntry name (at most one per family)
    loras: dict[str, LoraEntry] = field(default_factory=dict)  # in file order
    ip_adapters: dict[str, IpAdapterEntry] = field(default_factory=dict)  # at most one per family

    def ip_adapter_for(self, family: str) -> IpAdapterEntry | None:
        """The IP-Adapter that reads reference images for models of `family` (None: they take none)."""
        return next((entry for entry in self.ip_adapters.values() if entry.family == family), None)

    def loras_for(self, family: str) -> list[LoraEntry]:
        """The LoRAs a model of `family` takes."""
        return [entry for entry in self.loras.values() if entry.family == family]

    def style(self, style_id: str) -> Style:
        if style_id not in self.styles:
            raise CatalogueError(f"There is no style {style_id!r} in the catalogue (it may have been removed).")
        return self.styles[style_id]

    def location(self, model: str, settings: Settings) -> str:
        """What the worker loads for a model: the preview stand-in of its family and kind in preview mode."""
        entry = self.models[model]
        return entry.preview if settings.uses_preview_model else entry.location

    @staticmethod
    def kind_for(task: Task) -> ModelKind:
        """The kind of model that runs `task` (inpainting runs on the sd models too)."""
        return _TASK_KINDS[task]

    def controlnet_for(self, guide: Guide, family: str) -> ModelEntry:
        """The ControlNet that follows `guide` for models of `family`; CatalogueError when the catalogue has none."""
        by_family = self.controlnets.get(guide, {})
        if family not in by_family:
            made_for = ", ".join(FAMILIES[f].label for f in by_family) or "no family"
            raise CatalogueError(
                f"The catalogue has no {guide.label} ControlNet made for {FAMILIES[family].label} ({family}) models, "
                f"only for {made_for} ([controlnets] {guide.value})."
            )
        return self.models[by_family[family]]

    def availability(self, model: str, settings: Settings) -> Availability:
        entry = self.models[model]
        if settings.uses_preview_model:
            return Availability(True, "")
        return model_availability(entry.location, entry.kind)


def model_availability(location: str, kind: ModelKind) -> Availability:
    """Whether a model can load on this machine without the network, and if not, how to get it."""
    folder = Path(location).expanduser()
    if folder.is_dir():
        if (folder / kind.marker).is_file():
            return Availability(True, "")
        return Availability(False, f"The folder {location} has no {kind.marker}: save a complete model there.")
    if location.startswith((".", "/", "~")):
        return Availability(False, f"The folder {location} does not exist on this machine.")
    from huggingface_hub import try_to_load_from_cache  # torch-free; reads the local cache only

    if isinstance(try_to_load_from_cache(location, kind.marker), str):
        return Availability(True, "")
    return Availability(
        False,
        f"Not downloaded on this machine. Run `hf download {location}` where the hub is reachable "
        "(it also downloads on first use if this machine can reach the hub), or set its location in "
        "the catalogue to a local folder.",
    )


_cache_lock = threading.Lock()
_cache: dict[Path, tuple[float, Catalogue]] = {}


def load_catalogue(path: Path) -> Catalogue:
    """The catalogue at `path`, parsed again only when the file changed since the last call."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise CatalogueError(f"The style catalogue {path} cannot be read ({exc.strerror}).") from exc
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
    catalogue = parse_catalogue(path.read_bytes().decode("utf-8"), source=str(path))
    with _cache_lock:
        _cache[path] = (mtime, catalogue)
    return catalogue


def parse_catalogue(text: str, *, source: str = "catalogue") -> Catalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source} is not valid TOML: {exc}") from exc
    models = {name: _model(name, entry, source) for name, entry in _table(data, "models", source).items()}
    controlnets = dict(
        _guide_controlnets(guide, names, models, source)
        for guide, names in _table(data, "controlnets", source, required=False).items()
    )
    styles = {sid: _style(sid, entry, models, source) for sid, entry in _table(data, "styles", source).items()}
    if not styles:
        raise CatalogueError(f"{source} has no [styles.*] entries.")
    loras = {name: _lora(name, entry, source) for name, entry in _table(data, "loras", source, required=False).items()}
    adapters = {
        name: _ip_adapter(name, entry, source)
        for name, entry in _table(data, "ip_adapters", source, required=False).items()
    }
    for family in {entry.family for entry in adapters.values()}:
        names = [name for name, entry in adapters.items() if entry.family == family]
        if len(names) > 1:
            raise CatalogueError(f"{source}: the {family} family has several IP-Adapters ({', '.join(names)}).")
    return Catalogue(models=models, styles=styles, controlnets=controlnets, loras=loras, ip_adapters=adapters)


def _ip_adapter(name: str, entry: object, source: str) -> IpAdapterEntry:
    where = f"{source} [ip_adapters.{name}]"
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where} should be a table.")
    location = _field(entry, "location", str, where).strip()
    if location.startswith((".", "/", "~")) and not Path(location).expanduser().is_dir():
        raise CatalogueError(f"{where}: {name!r} names the folder {location}, which does not exist on this machine.")
    family = _family_field(entry, where, what=f"IP-Adapter {name!r}")
    if family not in IP_ADAPTER_FAMILIES:
        raise CatalogueError(
            f"{where}: the studio attaches IP-Adapters to {', '.join(IP_ADAPTER_FAMILIES)} models, not {family}."
        )
    return IpAdapterEntry(
        name,
        location,
        _field(entry, "weight_name", str, where).strip(),
        _field(entry, "image_encoder", str, where).strip(),
        family,
        _field(entry, "about", str, where, ""),
        _sha256_field(entry, "sha256", where),
        _sha256_field(entry, "encoder_sha256", where),
    )


def _family_field(entry: dict, where: str, *, what: str) -> str:
    family = _field(entry, "family", str, where)
    if family not in FAMILIES:
        raise CatalogueError(
            f"{where}: {what} names the unknown family {family!r}; the known families are {', '.join(STUDIO_FAMILIES)}."
        )
    return family


def _sha256_field(entry: dict, key: str, where: str) -> str:
    sha256 = _field(entry, key, str, where, "").strip().lower()
    if sha256 and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
        raise CatalogueError(f"{where}: `{key}` should be 64 hex digits, got {sha256!r}.")
    return sha256


def _lora(name: str, entry: object, source: str) -> LoraEntry:
    where = f"{source} [loras.{name}]"
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where} should be a table.")
    location = _field(entry, "location", str, where).strip()
    if not location:
        raise CatalogueError(f"{where}: `location` is empty.")
    if location.startswith((".", "/", "~")) and not Path(location).expanduser().exists():
        raise CatalogueError(f"{where}: LoRA {name!r} names the file {location}, which does not exist on this machine.")
    family = _family_field(entry, where, what=f"LoRA {name!r}")
    sha256 = _sha256_field(entry, "sha256", where)
    return LoraEntry(name, location, family, _field(entry, "about", str, where, ""), sha256)


def _guide_controlnets(
    guide: str, names: object, models: dict[str, ModelEntry], source: str
) -> tuple[Guide, dict[str, str]]:
    """One [controlnets] entry: a ControlNet model name, or a list of them (one per family), by family."""
    where = f"{source} [controlnets] {guide}"
    try:
        known = Guide(guide)
    except ValueError:
        raise CatalogueError(f"{where}: unknown guide; use {', '.join(Guide)}.") from None
    by_family: dict[str, str] = {}
    for model in names if isinstance(names, list) else [names]:
        if not isinstance(model, str) or model not in models or models[model].kind != ModelKind.controlnet:
            raise CatalogueError(f"{where}: {model!r} is not a controlnet in [models].")
        family = models[model].family
        if family in by_family:
            raise CatalogueError(
                f"{where}: {by_family[family]!r} and {model!r} are both {family} ControlNets; name one per family."
            )
        by_family[family] = model
    return known, by_family


def _table(data: dict, key: str, source: str, *, required: bool = True) -> dict:
    table = data.get(key, {} if not required else None)
    if not isinstance(table, dict):
        raise CatalogueError(f"{source} needs a [{key}] table.")
    return table


def starting_steps(style: Style | None, quality: Quality) -> int:
    """The steps a form (or the command line) starts from: the style's model's own schedule length (a distilled
    model, ModelEntry.steps), else the quality tier's."""
    return style.steps if style is not None and style.steps else QUALITY_TIERS[quality].steps


def _field(entry: dict, key: str, kind: type, where: str, default: object = None) -> object:
    value = entry.get(key, default)
    if value is None:
        raise CatalogueError(f"{where}: `{key}` is missing.")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CatalogueError(f"{where}: `{key}` should be a {kind.__name__}, got {value!r}.")
    return value


def _model(name: str, entry: object, source: str) -> ModelEntry:
    where = f"{source} [models.{name}]"
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where} should be a table.")
    kind = _field(entry, "kind", str, where)
    try:
        kind = ModelKind(kind)
    except ValueError:
        raise CatalogueError(f"{where}: kind {kind!r} is not one of {', '.join(ModelKind)}.") from None
    location = _field(entry, "location", str, where).strip()
    if not location:
        raise CatalogueError(f"{where}: `location` is empty.")
    credits = 0
    if kind is not ModelKind.controlnet:
        credits = _field(entry, "credits", int, where)
        if not MIN_CREDITS <= credits <= MAX_CREDITS:
            raise CatalogueError(
                f"{where}: credits must be a whole number from {MIN_CREDITS} to {MAX_CREDITS}, got {credits}."
            )
    elif "credits" in entry:
        raise CatalogueError(f"{where}: a ControlNet has no price of its own; it steers the run of a style's model.")
    family = _field(entry, "family", str, where, DEFAULT_FAMILY)
    if not kind.has_family and "family" in entry:
        raise CatalogueError(f"{where}: an {kind.value} belongs to no model family; remove `family`.")
    if family not in FAMILIES:
        raise CatalogueError(
            f"{where}: model {name!r} names the unknown family {family!r}; the known families are "
            f"{', '.join(STUDIO_FAMILIES)}."
        )
    if kind is ModelKind.controlnet and FAMILIES[family].pipelines.controlnet_img2img is None:
        raise CatalogueError(f"{where}: the {FAMILIES[family].label} family has no ControlNet pipelines.")
    offload = _field(entry, "offload", str, where, "none")
    if offload not in OFFLOAD_MODES:
        raise CatalogueError(
            f"{where}: model {name!r} asks for offload {offload!r}; use one of {', '.join(map(repr, OFFLOAD_MODES))}."
        )
    steps = None
    if "steps" in entry:
        steps = _field(entry, "steps", int, where)
        fewest_max = min(tier.max_steps for tier in QUALITY_TIERS.values())
        if kind is not ModelKind.sd or not 1 <= steps <= fewest_max:
            raise CatalogueError(
                f"{where}: `steps` (a distilled model's schedule length) is for an sd model, 1 to {fewest_max}."
            )
    return ModelEntry(
        name=name,
        kind=kind,
        location=location,
        about=_field(entry, "about", str, where, ""),
        family=family,
        credits=credits,
        offload=offload,
        licence=_field(entry, "licence", str, where, "").strip(),
        steps=steps,
    )


def _style(style_id: str, entry: object, models: dict[str, ModelEntry], source: str) -> Style:
    where = f"{source} [styles.{style_id}]"
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where} should be a table.")
    task = _field(entry, "task", str, where)
    try:
        task = Task(task)
    except ValueError:
        raise CatalogueError(f"{where}: task {task!r} is not one of {', '.join(Task)}.") from None
    if task == Task.inpaint:
        raise CatalogueError(f"{where}: use task = 'img2img'; every img2img style also works for inpainting.")
    if task not in _TASK_KINDS:
        offered = ", ".join(repr(t.value) for t in _TASK_KINDS if t != Task.inpaint)
        raise CatalogueError(f"{where}: the studio has no {task.label} page yet; a style's task is one of {offered}.")
    model = _field(entry, "model", str, where)
    if model not in models:
        raise CatalogueError(f"{where}: model {model!r} is not in [models].")
    if models[model].kind != _TASK_KINDS[task]:
        raise CatalogueError(f"{where}: a {task.value} style needs a {_TASK_KINDS[task].value} model, not {model!r}.")
    family = models[model].family_info if models[model].kind.has_family else None
    if family is not None:
        _check_style_family(family, task, model, entry, where)
    prompt = _field(entry, "prompt", str, where)
    if "{prompt}" not in prompt:
        raise CatalogueError(f"{where}: the prompt template must contain {{prompt}} (where the user's words go).")
    if "credits" in entry:
        raise CatalogueError(
            f"{where}: a style has no price of its own; set `credits` on its model, [models.{model}] "
            "(a price follows the model that runs)."
        )
    if task == Task.edit and "strength" in entry:
        raise CatalogueError(f"{where}: an edit has no strength (every step runs); remove `strength`.")
    strength = _field(entry, "strength", float, where, 1.0 if task == Task.edit else 0.6)
    guidance = _field(entry, "guidance", float, where, 7.5)
    qualities = _field(entry, "qualities", list, where, ["standard"])
    if not 0.0 < strength <= 1.0:
        raise CatalogueError(f"{where}: strength must be in (0, 1], got {strength}.")
    if not 0.0 <= guidance <= MAX_GUIDANCE:
        raise CatalogueError(f"{where}: guidance must be between 0 and {MAX_GUIDANCE:g}, got {guidance}.")
    try:
        tiers = tuple(Quality(q) for q in qualities)
    except ValueError:
        raise CatalogueError(f"{where}: qualities must be from {', '.join(Quality)}, got {qualities}.") from None
    if not tiers:
        raise CatalogueError(f"{where}: offer at least one quality tier.")
    return Style(
        id=style_id,
        name=_field(entry, "name", str, where),
        description=_field(entry, "description", str, where, ""),
        task=task,
        model=model,
        prompt=prompt,
        negative_prompt=_field(entry, "negative_prompt", str, where, ""),
        strength=strength,
        guidance=guidance,
        qualities=tiers,
        credits=models[model].credits,
        family=family.name if family is not None else DEFAULT_FAMILY,
        steps=models[model].steps,
    )


def _check_style_family(family: Family, task: Task, model: str, entry: dict, where: str) -> None:
    """A style's task must be one its model's family runs (an editor only edits), and its negative prompt one the
    family takes (guidance-distilled FLUX.1 has none)."""
    runs = family.pipelines.edit if task == Task.edit else family.pipelines.img2img
    if runs is None:
        does = "edits with an instruction only: use task = 'edit'" if family.pipelines.edit else "does not edit"
        raise CatalogueError(f"{where}: model {model!r} ({family.label}) {does}.")
    if entry.get("negative_prompt") and not family.negative_prompt:
        raise CatalogueError(f"{where}: {family.label} models take no negative prompt; remove `negative_prompt`.")
