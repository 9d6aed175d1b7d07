import os
import stat

import pytest
from sqlalchemy import text
from sqlmodel import select

from studio.accounts.bootstrap import ConfigError, bootstrap, cookie_key_for
from studio.accounts.users import verify_password
from studio.config import get_settings, load_settings
from studio.db.engine import get_engine, session_for
from studio.db.tables import Role, User
from tests.support import ADMIN_PASSWORD


def admins(settings):
    with session_for(settings.database_url) as session:
        return session.exec(select(User).where(User.role == Role.admin)).all()


def test_first_run_creates_schema_and_the_configured_admin_once(studio_settings):
    report = bootstrap(studio_settings)
    assert report.generated_admin_password is None
    bootstrap(studio_settings)
    [admin] = admins(studio_settings)
    assert admin.username == "admin"
    assert verify_password(ADMIN_PASSWORD, admin.password_hash)
    assert ADMIN_PASSWORD not in admin.password_hash


def test_without_a_configured_password_one_is_generated_and_printed_once(studio_settings, monkeypatch, capsys):
    monkeypatch.delenv("STUDIO_ADMIN_PASSWORD")
    get_settings.cache_clear()
    settings = get_settings()
    report = bootstrap(settings)
    password = report.generated_admin_password
    assert password and len(password) >= 12
    assert password in capsys.readouterr().out
    [admin] = admins(settings)
    assert verify_password(password, admin.password_hash)
    assert bootstrap(settings).generated_admin_password is None
    assert password not in capsys.readouterr().out


@pytest.mark.parametrize("key", ["short", "change-me", "x" * 31])
def test_a_short_or_example_cookie_key_refuses_to_start(studio_settings, monkeypatch, key):
    monkeypatch.setenv("STUDIO_COOKIE_KEY", key)
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="at least 32"):
        bootstrap(get_settings())
    assert not get_settings().data_dir.joinpath("studio.db").exists()


def test_an_unset_cookie_key_is_generated_privately_and_kept(studio_settings, monkeypatch):
    monkeypatch.delenv("STUDIO_COOKIE_KEY")
    get_settings.cache_clear()
    settings = get_settings()
    key = cookie_key_for(settings)
    key_file = settings.data_dir / "secrets" / "cookie_key"
    assert len(key) >= 32
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert cookie_key_for(settings) == key


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_foreign_keys(studio):
    with get_engine(get_settings().database_url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_settings_precedence_env_over_secrets_over_defaults(tmp_path):
    secrets_file = tmp_path / "secrets.toml"
    secrets_file.write_text('[studio]\nmodel = "from-secrets/model"\nmax_output_side = 768\n')
    settings = load_settings({"STUDIO_DATA_DIR": str(tmp_path)}, secrets_file)
    assert settings.model == "from-secrets/model"
    assert settings.max_output_side == 768
    assert settings.database_url == f"sqlite:///{tmp_path / 'studio.db'}"
    assert settings.models_dir == tmp_path / "models"
    settings = load_settings({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_MODEL": "env/model"}, secrets_file)
    assert settings.model == "env/model"
    assert load_settings({}, tmp_path / "missing.toml").model == "preview"


def test_a_bad_setting_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="MAX_OUTPUT_SIDE"):
        load_settings({"STUDIO_MAX_OUTPUT_SIDE": "huge"}, tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"STUDIO_SESSION_IDLE_MINUTES": "0"}, "STUDIO_SESSION_IDLE_MINUTES must be a whole number, at least 1"),
        ({"STUDIO_SESSION_MAX_DAYS": "a week"}, "STUDIO_SESSION_MAX_DAYS must be a whole number"),
        ({"STUDIO_SESSION_IDLE_MINUTES": "2881", "STUDIO_SESSION_MAX_DAYS": "2"}, "could never be idle that long"),
        ({"STUDIO_COOKIE_NAME": "a;b=c"}, "STUDIO_COOKIE_NAME must be 1–64 letters"),
    ],
)
def test_a_bad_session_setting_is_a_clear_error(tmp_path, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ, tmp_path / "missing.toml")


def test_session_settings_are_read(tmp_path):
    settings = load_settings(
        {"STUDIO_SESSION_IDLE_MINUTES": "30", "STUDIO_SESSION_MAX_DAYS": "2", "STUDIO_CLIENT_IP_HEADER": "X-Real-IP"},
        tmp_path / "missing.toml",
    )
    assert (settings.session_idle_minutes, settings.session_max_days) == (30, 2)
    assert settings.client_ip_header == "X-Real-IP"


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 8 characters"), ("é" * 40, "at most 72 bytes"), (" padded-password", "space")],
)
def test_an_unusable_admin_password_refuses_to_start_and_says_why(studio_settings, monkeypatch, password, message):
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", password)
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match=f"STUDIO_ADMIN_PASSWORD .* is not usable: .*{message}"):
        bootstrap(get_settings())
    assert not list(get_settings().data_dir.glob("studio.db*"))  # refused before the database was made


@pytest.mark.parametrize("bad", ["", "\n", "too-short-a-key"], ids=["empty", "blank", "short"])
def test_a_bad_cookie_key_file_is_never_used_a_new_key_replaces_it(studio_settings, monkeypatch, bad):
    monkeypatch.delenv("STUDIO_COOKIE_KEY")
    get_settings.cache_clear()
    settings = get_settings()
    key_file = settings.data_dir / "secrets" / "cookie_key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(bad)
    key = cookie_key_for(settings)
    assert len(key) >= 32 and key != bad.strip()
    assert key_file.read_text() == key
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert cookie_key_for(settings) == key


def test_the_cookie_key_file_is_written_whole_or_not_at_all(studio_settings, monkeypatch):
    """A crash while writing leaves no key file (the key goes to a temporary file that is then renamed)."""
    monkeypatch.delenv("STUDIO_COOKIE_KEY")
    get_settings.cache_clear()
    settings = get_settings()

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        cookie_key_for(settings)
    secrets_dir = settings.data_dir / "secrets"
    assert not (secrets_dir / "cookie_key").exists()
    assert [p.name for p in secrets_dir.iterdir()] == ["cookie_key.lock"]  # no temporary file left behind


def test_processes_starting_together_agree_on_one_cookie_key(studio_settings, monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("STUDIO_COOKIE_KEY")
    get_settings.cache_clear()
    code = "from studio.accounts.bootstrap import cookie_key_for; from studio.config import get_settings; "
    code += "print(cookie_key_for(get_settings()))"
    env = dict(os.environ)
    processes = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    keys = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert len(keys) == 1 and len(keys.pop()) >= 32
