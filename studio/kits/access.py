"""Who sees and runs a brand kit: only the members of its team. Another team's kit is never listed, and a submit
naming one (or a kit that changed since the form was filled) is refused, charging nothing."""

from __future__ import annotations

from sqlmodel import Session, col, select

from studio.catalogue.requests import JobRequest
from studio.db.tables import BrandKit, User
from studio.errors import Refused


def team_kits(*, session: Session, user: User) -> list[BrandKit]:
    """The kits of the user's team, by name (none for a user in no team)."""
    return [] if user.team_id is None else kits_of_team(session=session, team_id=user.team_id)


def kits_of_team(*, session: Session, team_id: int) -> list[BrandKit]:
    """A team's kits, by name (what its members see; admins manage them on the Brand kits page)."""
    query = select(BrandKit).where(BrandKit.team_id == team_id).order_by(col(BrandKit.name), col(BrandKit.id))
    return list(session.exec(query).all())


def usable_kit(*, session: Session, user: User, kit_id: int) -> BrandKit:
    """A kit of the user's team; Refused alike for another team's kit and for none (neither is shown to them)."""
    kit = session.get(BrandKit, kit_id)
    if kit is None or user.team_id is None or kit.team_id != user.team_id:
        raise Refused(f"There is no brand kit #{kit_id} for your team (it may have been deleted). Nothing was charged.")
    return kit


def refuse_foreign_kits(*, session: Session, user: User, requests: list[JobRequest]) -> None:
    """Refuse requests made from a kit of another team, a deleted kit, or a kit an admin saved again since (its
    model, LoRAs or template may differ from what the request runs)."""
    for request in requests:
        if request.kit_id is None:
            continue
        kit = usable_kit(session=session, user=user, kit_id=request.kit_id)
        if kit.updated_at.isoformat() != request.kit_saved_at:
            raise Refused(
                f"The brand kit {kit.name!r} has changed since these settings were made: choose it again. "
                "Nothing was charged."
            )
