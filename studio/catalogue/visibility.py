"""Which catalogue models are in production: an admin hides one on the Models page (studio.accounts.admin.
set_model_hidden; it stays in the catalogue file and on that page); the styles that run it are not offered and a
submit naming it is refused, charging nothing."""

from __future__ import annotations

from sqlmodel import Session, select

from studio.catalogue.requests import JobRequest
from studio.catalogue.styles import Style
from studio.db.tables import HiddenModel
from studio.errors import Refused


def hidden_models(*, session: Session) -> frozenset[str]:
    """The names of the catalogue models an admin has hidden."""
    return frozenset(session.exec(select(HiddenModel.name)).all())


def production_styles(styles: list[Style], hidden: frozenset[str]) -> list[Style]:
    """The styles whose model is not hidden, in their order."""
    return [style for style in styles if style.model not in hidden]


def refuse_hidden(*, session: Session, requests: list[JobRequest]) -> None:
    """Refuse requests that run a hidden catalogue model (a recipe, a preset or an open form may still name one)."""
    hidden = hidden_models(session=session)
    for request in requests:
        if request.catalogue_model in hidden:
            raise Refused(
                f"The model {request.catalogue_model!r} has been taken out of production by an admin, so its styles "
                "cannot run now. Nothing was charged."
            )
