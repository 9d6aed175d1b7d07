"""Names people type are checked against their column's length before they reach the database: at the limit they
are stored, one character over they are refused with a message and nothing is stored, on SQLite (which would store
anything) and PostgreSQL (which would raise DataError). Characters, not bytes: "é" is one character."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from studio.accounts import admin
from studio.accounts.users import create_user, get_user
from studio.billing.pricing import Quality
from studio.catalogue.presets import PresetSettings, rename_preset, save_preset
from studio.db.engine import write_session
from studio.db.tables import Asset, CreditEntry, Preset, Team, User
from studio.errors import Refused
from tests.support import queue_job

pytestmark = pytest.mark.both_databases

LOOK = PresetSettings(
    style=None,
    model="preview",
    prompt="a watercolor",
    negative_prompt="",
    strength=0.5,
    quality=Quality.standard,
    steps=20,
    guidance=7.5,
    seed=1,
)


@pytest.fixture
def session(studio, studio_settings):
    with write_session(studio_settings.database_url) as session:
        yield session


def count(session, table) -> int:
    return session.exec(select(func.count()).select_from(table)).one()


def new_user(session, n: int, *, display_name: str = "Someone", email: str | None = None) -> User:
    return create_user(
        session=session,
        username=f"user{n}",
        password="long-enough",
        email=email or f"user{n}@example.com",
        display_name=display_name,
    )


def new_team(session, name: str) -> Team:
    return admin.create_team(session=session, actor=get_user(session=session, username="admin"), name=name)


def rename_team(session, name: str) -> Team:
    actor = get_user(session=session, username="admin")
    team = session.exec(select(Team)).first() or new_team(session, "Before")
    return admin.rename_team(session=session, actor=actor, team_id=team.id, name=name)


def new_preset(session, name: str) -> Preset:
    return save_preset(session=session, owner=get_user(session=session, username="admin"), name=name, preset=LOOK)


def grant(session, reason: str):
    actor = get_user(session=session, username="admin")
    mia = get_user(session=session, username="mia") or create_user(
        session=session, username="mia", password="long-enough", email="mia@example.com"
    )
    return admin.grant_credits(session=session, actor=actor, user_id=mia.id, amount=5, reason=reason)


def renamed_preset(session, name: str) -> Preset:
    owner = get_user(session=session, username="admin")
    preset = session.exec(select(Preset)).first() or new_preset(session, "Before")
    return rename_preset(session=session, user=owner, preset_id=preset.id, name=name)


CASES = [
    # (what, the column's limit, make a row with a value of n characters, the table it would land in, the message)
    ("display name", 80, lambda s, n: new_user(s, n, display_name="é" * n), User, "A display name has at most 80"),
    ("e-mail", 254, lambda s, n: new_user(s, n, email="é" * (n - 4) + "@x.y"), User, "An e-mail address has at most"),
    ("team name", 80, lambda s, n: new_team(s, "é" * n), Team, "A team name has at most 80"),
    ("team rename", 80, lambda s, n: rename_team(s, "é" * n), Team, "A team name has at most 80"),
    ("preset name", 80, lambda s, n: new_preset(s, "é" * n), Preset, "A preset name has at most 80"),
    ("preset rename", 80, lambda s, n: renamed_preset(s, "é" * n), Preset, "A preset name has at most 80"),
    ("credit reason", 500, lambda s, n: grant(s, "é" * n), CreditEntry, "A reason has at most 500"),
]


@pytest.mark.parametrize(("what", "limit", "make", "table", "message"), CASES, ids=[case[0] for case in CASES])
def test_a_name_at_its_limit_is_stored_and_one_over_is_refused_with_nothing_stored(
    session, what, limit, make, table, message
):
    make(session, limit)
    before = count(session, table)
    with pytest.raises(Refused, match=f"{message}.*this one has {limit + 1}"):
        make(session, limit + 1)
    session.rollback()
    assert count(session, table) == before


def test_empty_names_are_refused(session):
    with pytest.raises(Refused, match="A team name cannot be empty"):
        new_team(session, "   ")
    with pytest.raises(Refused, match="A preset name cannot be empty"):
        new_preset(session, " ")
    with pytest.raises(Refused, match="An e-mail address cannot be empty"):
        new_user(session, 1, email=" ")


def test_an_uploaded_file_s_name_of_any_length_is_shortened_to_fit_keeping_its_extension(session, studio_settings):
    job = queue_job(session, studio_settings, original_name="é" * 300 + ".png")
    stored = session.get(Asset, job.source_asset_id).original_name
    assert len(stored) == 255 and stored.endswith("é.png") and stored.startswith("ééé") and "…" in stored
