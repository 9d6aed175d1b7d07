"""Admins create, change and delete a team's brand kits; each action and its audit entry (the kit's settings before
→ after) commit in one transaction, and a refused one changes nothing: no row, no entry, no stored file.

A kit's LoRAs are pinned when it is saved: each one's file hash now (studio.catalogue.loras). Its reference image is
validated like any upload and stored as an asset of the admin who added it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

# The admin services' audited transaction and team lookup: kits are admin actions like the rest of that module.
from studio.accounts.admin import _audited, _team
from studio.catalogue.loras import lora_sha256
from studio.catalogue.styles import Catalogue
from studio.config import Settings
from studio.db.limits import bounded_text, clipped_text
from studio.db.tables import Asset, AssetKind, AuditAction, AuditEntry, BrandKit, User, utcnow
from studio.errors import NotFound, Refused
from studio.kits.settings import KitLora, KitReference, KitSettings
from studio.media.storage import AssetStore, sha256_hex
from studio.media.validation import ValidatedImage


def pin_kit(
    *,
    config: Settings,
    catalogue: Catalogue,
    loras: Sequence[tuple[str, float]],
    reference: KitReference | None = None,
    **fields: Any,
) -> KitSettings:
    """A kit's settings (`fields`: the rest of KitSettings' fields) with each LoRA, given as (name, weight), pinned at
    its file's hash now; Refused, saying why, when they cannot run."""
    unpinned = KitSettings(
        **fields, loras=tuple(KitLora(name, float(weight), "") for name, weight in loras), reference=reference
    )
    unpinned.check(catalogue)  # names, families and limits before any file is hashed
    pinned = tuple(
        KitLora(lora.name, lora.weight, lora_sha256(catalogue.loras[lora.name], config)) for lora in unpinned.loras
    )
    return replace(unpinned, loras=pinned)


def save_kit(
    *,
    session: Session,
    actor: User,
    config: Settings,
    catalogue: Catalogue,
    store: AssetStore,
    team_id: int,
    kit_id: int | None,
    name: str,
    loras: Sequence[tuple[str, float]],
    reference_image: ValidatedImage | None = None,
    reference_scale: float = 0.5,
    keep_reference: bool = True,
    **fields: Any,
) -> BrandKit:
    """The admin page's form: create a kit (`kit_id` None) or change one, with its LoRAs pinned now (`fields`: the
    rest of KitSettings' fields). A new reference image replaces the kit's; without one the kit keeps its own (at
    `reference_scale`) unless `keep_reference` is off."""
    reference = None
    if reference_image is not None:
        reference = KitReference(sha256_hex(reference_image.png_bytes), reference_scale)
    elif kit_id is not None and keep_reference:
        existing = session.get(BrandKit, kit_id)
        kept = KitSettings.from_dict(existing.settings).reference if existing is not None else None
        reference = replace(kept, scale=reference_scale) if kept is not None else None
    kit = pin_kit(config=config, catalogue=catalogue, loras=loras, reference=reference, **fields)
    return write_kit(
        session=session,
        actor=actor,
        catalogue=catalogue,
        name=name,
        kit=kit,
        team_id=team_id,
        kit_id=kit_id,
        store=store,
        reference_image=reference_image,
    )


def write_kit(
    *,
    session: Session,
    actor: User,
    catalogue: Catalogue,
    name: str,
    kit: KitSettings,
    team_id: int | None = None,
    kit_id: int | None = None,
    store: AssetStore | None = None,
    reference_image: ValidatedImage | None = None,
    now: datetime | None = None,
) -> BrandKit:
    """Create a kit for the team `team_id`, or (with `kit_id`) save a kit's new name and settings, whose new pins
    refuse the presets that pinned the old ones. `reference_image` is the image `kit.reference` names, stored with
    the kit."""
    now = now or utcnow()
    with _audited(session, actor, AuditAction.kit_create if kit_id is None else AuditAction.kit_change, now) as entry:
        if kit_id is None:
            team = _team(session, team_id)
            row, before = BrandKit(team_id=team.id, name=name, settings={}), None
        else:
            row = _kit(session, kit_id)
            before = {"name": row.name, **row.settings}
        row.name = _kit_name(session, row.team_id, name, kit_id=kit_id)
        _write(session, entry, row, kit, catalogue, store, reference_image, actor, now, before=before)
    session.refresh(row)
    return row


def delete_kit(*, session: Session, actor: User, kit_id: int, now: datetime | None = None) -> str:
    """Delete a kit (its name returned): presets that pinned it and forms that chose it are refused from now on."""
    now = now or utcnow()
    with _audited(session, actor, AuditAction.kit_delete, now) as entry:
        row = _kit(session, kit_id)
        name = row.name
        entry.target = _target(session, row)
        entry.details = {"kit_id": row.id, "team_id": row.team_id, "before": {"name": name, **row.settings}}
        session.delete(row)
    return name


def _write(
    session: Session,
    entry: AuditEntry,
    row: BrandKit,
    kit: KitSettings,
    catalogue: Catalogue,
    store: AssetStore | None,
    reference_image: ValidatedImage | None,
    actor: User,
    now: datetime,
    *,
    before: dict | None,
) -> None:
    kit.check(catalogue)
    _check_reference(session, kit, reference_image)
    row.settings, row.updated_at = kit.to_dict(), now
    session.add(row)
    session.flush()
    entry.target = _target(session, row)
    after = {"name": row.name, **row.settings}
    entry.details = {"kit_id": row.id, "team_id": row.team_id, "before": before, "after": after}
    if reference_image is not None:  # last: nothing is stored for a refused kit
        if store is None:
            raise Refused("A reference image needs the asset store to keep it.")
        store.put(reference_image.png_bytes)
        session.add(
            Asset(
                user_id=actor.id,
                kind=AssetKind.source,
                sha256=kit.reference.image_sha256,
                width=reference_image.width,
                height=reference_image.height,
                size_bytes=len(reference_image.png_bytes),
                original_name=f"brand kit {row.name}: reference",
                created_at=now,
            )
        )


def _check_reference(session: Session, kit: KitSettings, image: ValidatedImage | None) -> None:
    """A new reference image is the one the settings name; a kept one must still be a stored asset."""
    if image is not None:
        if kit.reference is None or kit.reference.image_sha256 != sha256_hex(image.png_bytes):
            raise Refused("The kit's reference image and its settings disagree; upload it again.")
    elif (
        kit.reference is not None
        and session.exec(select(Asset.id).where(Asset.sha256 == kit.reference.image_sha256)).first() is None
    ):
        raise Refused("The kit's reference image is no longer stored; upload it again.")


def _kit(session: Session, kit_id: int) -> BrandKit:
    row = session.get(BrandKit, kit_id)
    if row is None:
        raise NotFound(f"There is no brand kit #{kit_id}.")
    return row


def _kit_name(session: Session, team_id: int, name: str, *, kit_id: int | None) -> str:
    name = bounded_text(name, column=BrandKit.__table__.c.name, what="A kit name")
    same = session.exec(select(BrandKit.id).where(BrandKit.team_id == team_id, BrandKit.name == name)).first()
    if same is not None and same != kit_id:
        raise Refused(f"The team already has a kit called {name!r}.")
    return name


def _target(session: Session, row: BrandKit) -> str:
    target = f"kit {row.name} · team {_team(session, row.team_id).name}"
    return clipped_text(target, column=AuditEntry.__table__.c.target)
