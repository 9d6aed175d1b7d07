"""An admin takes a catalogue model out of production: its styles leave the pickers, and every submit naming it is
refused with a message, charging nothing; offering it again restores both."""

from __future__ import annotations

import pytest
from sqlmodel import func, select
from streamlit.testing.v1 import AppTest

from pipelines.params import Img2ImgParams
from studio.accounts.admin import set_model_hidden
from studio.accounts.users import create_user, get_user
from studio.billing.credits import Account, balance
from studio.catalogue.requests import style_request
from studio.catalogue.styles import ModelKind, load_catalogue
from studio.catalogue.visibility import hidden_models
from studio.config import PROJECT_ROOT
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AuditAction, AuditEntry, CreditEntry, HiddenModel, Job, Role, utcnow
from studio.errors import Forbidden, Refused
from studio.jobs.submit import submit_job
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import APP, TIMEOUT, png_bytes, sign_in_as

CATALOGUE = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
STYLE = CATALOGUE.styles["flux-product"]
PARAMS = Img2ImgParams(prompt="a bottle", strength=0.5, steps=2, guidance=3.5, seed=1)


def admin(settings):
    with session_for(settings.database_url) as session:
        return get_user(session=session, username="admin")


def hide(settings, model: str, hidden: bool, who=None) -> None:
    with write_session(settings.database_url) as session:
        set_model_hidden(session=session, actor=who or admin(settings), catalogue=CATALOGUE, model=model, hidden=hidden)


def state(settings) -> tuple:
    with session_for(settings.database_url) as session:
        rows = tuple(session.exec(select(func.count()).select_from(t)).one() for t in (Job, Asset, CreditEntry))
        return (*rows, balance(session=session, account=Account(user_id=admin(settings).id), now=utcnow()))


def submit(settings):
    request = style_request(settings=settings, catalogue=CATALOGUE, style_id=STYLE.id, params=PARAMS)
    with write_session(settings.database_url) as session:
        return submit_job(
            session=session,
            store=AssetStore(settings.assets_dir),
            settings=settings,
            user=admin(settings),
            upload=validate_image_bytes(png_bytes(256, 256)),
            original_name="bottle.png",
            request=request,
        )


def test_a_hidden_models_submit_is_refused_charging_nothing_and_offering_it_again_restores_it(studio, studio_settings):
    hide(studio_settings, STYLE.model, True)
    with session_for(studio_settings.database_url) as session:
        assert hidden_models(session=session) == {STYLE.model}
        assert session.get(HiddenModel, STYLE.model).hidden_by == admin(studio_settings).id
        [audited] = session.exec(select(AuditEntry).where(AuditEntry.action == AuditAction.model_production)).all()
        assert (audited.target, audited.details["after"]) == (f"model {STYLE.model}", {"in_production": False})
    before = state(studio_settings)
    with pytest.raises(Refused, match=f"{STYLE.model!r} has been taken out of production.*Nothing was charged"):
        submit(studio_settings)
    assert state(studio_settings) == before and not any(AssetStore(studio_settings.assets_dir).root.rglob("*.png"))
    hide(studio_settings, STYLE.model, False)
    assert submit(studio_settings).id is not None


def test_only_an_admin_hides_a_model_and_only_a_model_that_runs_styles(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        member = create_user(
            session=session, username="mia", password="a long passphrase 1", email="mia@example.com", role=Role.member
        )
    with pytest.raises(Forbidden):
        hide(studio_settings, STYLE.model, True, who=member)
    controlnet = next(entry.name for entry in CATALOGUE.models.values() if entry.kind is ModelKind.controlnet)
    with pytest.raises(Refused, match="is a ControlNet"):
        hide(studio_settings, controlnet, True)
    with pytest.raises(Refused, match="no model 'nope'"):
        hide(studio_settings, "nope", True)
    with session_for(studio_settings.database_url) as session:
        assert hidden_models(session=session) == frozenset()


def test_the_models_page_switch_hides_a_model_and_its_styles_leave_the_picker(studio, studio_settings):
    at = sign_in_as(AppTest.from_file(APP, default_timeout=TIMEOUT), "admin").run()
    at.switch_page("pages/admin/models.py").run()
    assert not at.exception, at.exception
    shown = at.dataframe[0].value
    licences = dict(zip(shown["model"], shown["licence"], strict=True))
    assert licences == {entry.name: entry.licence or "—" for entry in CATALOGUE.models.values()}
    at.toggle(key=f"models.production.{STYLE.model}").set_value(False).run()
    assert not at.exception, at.exception
    with session_for(studio_settings.database_url) as session:
        assert hidden_models(session=session) == {STYLE.model}
    at.switch_page("pages/transform.py").run()
    names = at.selectbox(key="transform.style").options
    assert all(style.name not in " ".join(names) for style in CATALOGUE.styles.values() if style.model == STYLE.model)
    assert any(CATALOGUE.styles["artistic"].name in name for name in names)
