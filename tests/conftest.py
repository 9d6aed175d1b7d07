"""Shared fixtures: every test gets its own data folder; the tiny preview model is built once per run.
Helpers that tests import are in tests/support.py.

Databases: every test runs on SQLite unless its module says `pytestmark = pytest.mark.both_databases`;
then each of its tests that uses `studio_settings` runs twice, on SQLite and on PostgreSQL (a fresh
database per test, copied from a template at the schema's head, in one throwaway cluster per run).
`pytest --db sqlite` or `--db postgresql` keeps one of the two. Without PostgreSQL (no initdb, no
psycopg) the PostgreSQL runs skip with the reason.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio import config
from studio.accounts.bootstrap import BootstrapReport, bootstrap
from studio.config import Settings, get_settings
from studio.devtools.pgcluster import PgCluster, Unavailable
from tests.support import ADMIN_PASSWORD

BACKENDS = ("sqlite", "postgresql")
TEMPLATE_DB = "studio_template"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=(*BACKENDS, "both"),
        default="both",
        help="databases for tests marked both_databases (default: both; the others always use SQLite)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_databases: run each test on SQLite and on PostgreSQL")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser journeys last: their served studio then starts after, not before, everything else has run."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/e2e/"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        chosen = metafunc.config.getoption("--db")
        backends = BACKENDS if chosen == "both" else (chosen,)
        metafunc.parametrize("db_backend", backends, indirect=True)


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """ "sqlite" unless the test is parametrized over both databases."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgresql_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster on a free loopback port, for the whole run (skips if unavailable)."""
    try:
        cluster = PgCluster.start()
    except Unavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgresql_url(postgresql_cluster: PgCluster) -> str:
    """A `postgresql+psycopg://` URL of an empty database in the throwaway cluster."""
    return postgresql_cluster.create_database("studio_tests")


@pytest.fixture(scope="session")
def postgresql_template(postgresql_cluster: PgCluster) -> str:
    """A database at the schema's head, which each test's database is copied from (fast)."""
    from studio.db.engine import get_engine, init_db

    url = postgresql_cluster.create_database(TEMPLATE_DB)
    init_db(url)
    get_engine(url).dispose()  # a template must have no connections when it is copied
    return TEMPLATE_DB


@pytest.fixture
def database_url(db_backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The test's own PostgreSQL database URL, or None for the SQLite default under the data folder."""
    if db_backend == "sqlite":
        yield None
        return
    cluster: PgCluster = request.getfixturevalue("postgresql_cluster")
    template = request.getfixturevalue("postgresql_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name, template=template)
    try:
        yield url
    finally:
        from studio.db.engine import get_engine

        get_engine(url).dispose()
        cluster.drop_database(name)


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models folder for the whole run, so the preview model is built once, not per test."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def studio_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_models_dir: Path, database_url: str | None
) -> Settings:
    """Settings for an isolated studio under tmp_path (the process env is what the app reads)."""
    for name in list(os.environ):
        if name.startswith("STUDIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "SECRETS_PATH", tmp_path / "no-secrets.toml")
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_MODELS_DIR", str(shared_models_dir))
    monkeypatch.setenv("STUDIO_COOKIE_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    # The suite's admin starts as any new account does (Free, 10 trial credits), which its figures assume; the
    # first-run plan and credits of a fresh install are tested with their defaults (tests/studio/accounts).
    monkeypatch.setenv("STUDIO_ADMIN_PLAN", "free")
    monkeypatch.setenv("STUDIO_ADMIN_CREDITS", "0")
    monkeypatch.setenv("STUDIO_WARMUP", "0")
    # Tests run the queue worker themselves (Worker.run_once), so results are deterministic.
    monkeypatch.setenv("STUDIO_IN_PROCESS_WORKER", "0")
    if database_url is not None:
        monkeypatch.setenv("STUDIO_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def studio(studio_settings: Settings) -> BootstrapReport:
    """A bootstrapped studio: schema, cookie key and the admin account exist."""
    return bootstrap(studio_settings)


@pytest.fixture(scope="session")
def preview(shared_models_dir: Path):
    """The tiny SD model (pipelines.registry.ModelRef), built once per run."""
    from pipelines.registry import PREVIEW_MODEL, ensure_preview_model, resolve_model

    ensure_preview_model(shared_models_dir)
    return resolve_model(PREVIEW_MODEL, models_dir=shared_models_dir)


@pytest.fixture(scope="session")
def preview_controlnet(shared_models_dir: Path):
    """The tiny ControlNet for the tiny SD model."""
    from pipelines.registry import ensure_preview_model, resolve_model

    ensure_preview_model(shared_models_dir, "preview-controlnet")
    return resolve_model("preview-controlnet", models_dir=shared_models_dir)


@pytest.fixture
def unet_calls(preview) -> Iterator[list[int]]:
    """Counts forward calls of the base pipeline's UNet (per-request pipelines share it)."""
    from pipelines.cache import get_base_pipeline

    calls: list[int] = []
    handle = get_base_pipeline(preview).unet.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()
