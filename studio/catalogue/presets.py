"""Presets: saved settings, personal or shared with the team, that pin everything that changes pixels.

A preset keeps the style (or "own settings", or the team's brand kit), the user's prompt and negative prompt,
strength, quality, steps, guidance, the seed policy and seed, the ControlNet settings, the 4× upscaler's noise level,
the LoRAs by name, weight and file hash, and the model they resolved to.
Applying it to a new image gives the same look; if an admin has since pointed the style at another model, changed
the kit's model, or a LoRA's file changed, applying it is refused, so a campaign never changes look silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pipelines.params import DEFAULT_NOISE_LEVEL, ControlParams, Guide, Img2ImgParams
from studio.billing.pricing import Quality
from studio.catalogue.requests import JobRequest, custom_request, style_request
from studio.catalogue.styles import Catalogue
from studio.config import Settings
from studio.db.limits import bounded_text
from studio.db.tables import Preset, Role, User, utcnow
from studio.errors import Refused
from studio.kits.access import usable_kit
from studio.kits.requests import kit_request


class SeedPolicy(StrEnum):
    fixed = "fixed"  # every image with the preset's seed: the same noise, the most consistent look
    random = "random"  # a new seed per image (recorded in each result's recipe)


@dataclass(frozen=True)
class PresetSettings:
    style: str | None  # a catalogue style id, or None for "own settings" on the configured model
    model: str  # what the settings resolved to when saved (pinned)
    prompt: str  # what the user wrote (the style adds its template)
    negative_prompt: str
    strength: float
    quality: Quality
    steps: int
    guidance: float
    seed: int
    seed_policy: SeedPolicy = SeedPolicy.fixed
    control: dict[str, Any] | None = None  # guide, conditioning_scale, low_threshold, high_threshold
    noise_level: int = DEFAULT_NOISE_LEVEL  # the 4× upscaler's (presets saved before it had none: the default)
    # Each LoRA the settings ran (a kit's too) as {name, weight, sha256}: pinned, like the model.
    loras: tuple[dict[str, Any], ...] = ()
    kit: int | None = None  # the team's brand kit (studio.kits) the settings came from; `style` is then None
    # The catalogue entry behind `model` (None: the configured model, or a preset saved before it was pinned).
    catalogue_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "quality": self.quality.value,
            "seed_policy": self.seed_policy.value,
            "loras": list(self.loras),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PresetSettings:
        return cls(
            **{
                **data,
                "quality": Quality(data["quality"]),
                "seed_policy": SeedPolicy(data["seed_policy"]),
                "loras": tuple(data.get("loras", ())),
            }
        )

    def lora_choices(self) -> tuple[tuple[str, float], ...]:
        """The LoRAs the user chose (name, weight); a kit's come with the kit."""
        return () if self.kit is not None else tuple((lora["name"], lora["weight"]) for lora in self.loras)

    def control_params(self) -> ControlParams | None:
        """The ControlNet settings, with the model left empty: the catalogue names it per guide."""
        if self.control is None:
            return None
        return ControlParams(model="", **{**self.control, "guide": Guide(self.control["guide"])})

    @classmethod
    def from_request(cls, request: JobRequest, *, seed_policy: SeedPolicy = SeedPolicy.fixed) -> PresetSettings:
        params, control = request.spec.params, request.spec.control
        return cls(
            style=request.style,
            model=request.model,
            prompt=request.user_prompt,
            negative_prompt=request.user_negative_prompt,
            strength=params.strength,
            quality=request.quality,
            steps=params.steps,
            guidance=params.guidance,
            seed=params.seed,
            seed_policy=seed_policy,
            control=None if control is None else {k: v for k, v in asdict(control).items() if k != "model"},
            noise_level=request.spec.noise_level,
            loras=tuple({"name": lora.name, "weight": lora.weight, "sha256": lora.sha256} for lora in request.loras),
            kit=request.kit_id,
            catalogue_model=request.catalogue_model,
        )


def preset_request(
    preset: PresetSettings,
    *,
    session: Session,
    user: User,
    settings: Settings,
    catalogue: Catalogue,
    seed: int | None = None,
) -> JobRequest:
    """The request the preset makes for one image by `user` (a kit's preset: a member of the kit's team); `seed`
    overrides the preset's (random seed policy). Refused when the model or a LoRA's file changed since it was saved."""
    params = Img2ImgParams(
        prompt=preset.prompt,
        negative_prompt=preset.negative_prompt,
        strength=preset.strength,
        steps=preset.steps,
        guidance=preset.guidance,
        seed=preset.seed if seed is None else seed,
    )
    control = preset.control_params()
    if preset.kit is not None:
        kit = usable_kit(session=session, user=user, kit_id=preset.kit)
        request = kit_request(
            settings=settings, catalogue=catalogue, kit=kit, params=params, quality=preset.quality, control=control
        )
    elif preset.style is None:
        request = custom_request(
            settings=settings,
            params=params,
            quality=preset.quality,
            control=control,
            catalogue=catalogue,
            loras=preset.lora_choices(),
        )
    else:
        request = style_request(
            settings=settings,
            catalogue=catalogue,
            style_id=preset.style,
            params=params,
            quality=preset.quality,
            control=control,
            noise_level=preset.noise_level,
            loras=preset.lora_choices(),
        )
    saved, now_runs = preset.model, request.model
    if preset.catalogue_model is not None and request.catalogue_model != preset.catalogue_model:
        saved, now_runs = preset.catalogue_model, request.catalogue_model  # two entries may share a location
    if saved != now_runs:
        raise Refused(
            f"This preset was saved with the model {saved!r}, and its settings now run {now_runs!r}; "
            "results would not match earlier ones. Save the preset again to accept the new model."
        )
    now = [{"name": lora.name, "weight": lora.weight, "sha256": lora.sha256} for lora in request.loras]
    if now != list(preset.loras):
        differ = [lora for lora in [*now, *preset.loras] if lora not in now or lora not in preset.loras]
        changed = ", ".join(sorted({lora["name"] for lora in differ}))
        raise Refused(
            f"This preset was saved with other LoRA files or weights than its settings run now ({changed}); results "
            "would not match earlier ones. Save the preset again to accept them."
        )
    return request


def save_preset(*, session: Session, owner: User, name: str, preset: PresetSettings, shared: bool = False) -> Preset:
    """Save (or overwrite the owner's preset of the same name); `shared` makes it visible to the owner's team."""
    name = _preset_name(name)
    if shared and owner.team_id is None:
        raise Refused("You are in no team, so the preset can only be personal.")
    existing = session.exec(select(Preset).where(Preset.owner_id == owner.id, Preset.name == name)).first()
    row = existing or Preset(owner_id=owner.id, name=name)
    row.settings = preset.to_dict()
    row.team_id = owner.team_id if shared else None
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def _preset_name(name: str) -> str:
    return bounded_text(name, column=Preset.__table__.c.name, what="A preset name")


def visible_presets(*, session: Session, user: User) -> list[Preset]:
    """The user's own presets and those shared with their team, by name."""
    visible = Preset.owner_id == user.id
    if user.team_id is not None:
        visible = or_(visible, Preset.team_id == user.team_id)
    return list(session.exec(select(Preset).where(visible).order_by(col(Preset.name), col(Preset.id))).all())


def find_preset(*, session: Session, user: User, name: str) -> Preset:
    """A preset the user can see, by name (their own first); Refused if there is none."""
    matches = [p for p in visible_presets(session=session, user=user) if p.name == name.strip()]
    if not matches:
        raise Refused(f"There is no preset called {name!r} that you can use.")
    return sorted(matches, key=lambda p: p.owner_id != user.id)[0]


def rename_preset(*, session: Session, user: User, preset_id: int, name: str) -> Preset:
    preset = _editable(session, user, preset_id)
    name = _preset_name(name)
    preset.name, preset.updated_at = name, utcnow()
    session.add(preset)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Refused(f"There is already a preset called {name!r}.") from None
    return preset


def delete_preset(*, session: Session, user: User, preset_id: int) -> None:
    session.delete(_editable(session, user, preset_id))
    session.commit()


def _editable(session: Session, user: User, preset_id: int) -> Preset:
    """The owner edits their presets; an admin may also edit presets shared with their team."""
    preset = session.get(Preset, preset_id)
    shared_with_admin = preset is not None and user.role is Role.admin and preset.team_id == user.team_id
    if preset is None or not (preset.owner_id == user.id or (shared_with_admin and preset.team_id is not None)):
        raise Refused("You can only change your own presets.")
    return preset
