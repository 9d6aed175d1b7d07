"""Which catalogue models are in production: an admin hides one on the Models page (it stays in the catalogue file
and on that page); the styles that run it are not offered and a submit naming it is refused, charging nothing."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from studio.catalogue.requests import JobRequest
from studio.catalogue.styles import Catalogue, ModelKind, Style
from studio.db.tables import HiddenModel, Role, User, utcnow
from studio.errors import Forbidden, Refused


def hidden_models(*, session: Session) -> frozenset[str]:
    """The names of the catalogue models an admin has hidden."""
    return frozenset(session.exec(select(HiddenModel.name)).all())


def production_styles(styles: list[Style], hidden: frozenset[str]) -> list[Style]:
    """The styles whose model is not hidden, in their order."""
    return [style for style in styles if style.model not in hidden]


def set_model_hidden(
    *, session: Session, admin: User, catalogue: Catalogue, model: str, hidden: bool, now: datetime | None = None
) -> None:
    """Hide a catalogue model from production, or offer it again. Admins only; ControlNets steer other models'
    runs and are not switched on their own."""
    if admin.role is not Role.admin:
        raise Forbidden("Only an admin can take a model out of production.")
    entry = catalogue.models.get(model)
    if entry is None:
        raise Refused(f"There is no model {model!r} in the catalogue.")
    if entry.kind is ModelKind.controlnet:
        raise Refused(f"{model!r} is a ControlNet: it runs only with a style's model; hide that model instead.")
    row = session.get(HiddenModel, model)
    if hidden and row is None:
        session.add(HiddenModel(name=model, hidden_by=admin.id, hidden_at=now or utcnow()))
    elif not hidden and row is not None:
        session.delete(row)
    session.commit()


def refuse_hidden(*, session: Session, requests: list[JobRequest]) -> None:
    """Refuse requests that run a hidden catalogue model (a recipe, a preset or an open form may still name one)."""
    hidden = hidden_models(session=session)
    for request in requests:
        if request.catalogue_model in hidden:
            raise Refused(
                f"The model {request.catalogue_model!r} has been taken out of production by an admin, so its styles "
                "cannot run now. Nothing was charged."
            )
