"""The studio as README serves it: the settings that keep the pages from slowing its worker down (the speed itself is
measured by bench/served.py, not here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from studio.config import load_settings
from studio.errors import ConfigError
from tests.support import ROOT

NO_SECRETS = Path("/nonexistent/secrets.toml")


def test_the_served_config_turns_off_the_file_watcher_and_the_garbage_collection_after_every_run():
    with (ROOT / ".streamlit" / "config.toml").open("rb") as fh:
        config = tomllib.load(fh)
    assert config["server"]["fileWatcherType"] == "none"
    assert config["runner"]["postScriptGC"] is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STUDIO_WORKER_THREADS", "many"),
        ("STUDIO_WORKER_THREADS", "-1"),
        ("STUDIO_POLL_MAX_SECONDS", "0.5"),
        ("STUDIO_POLL_MAX_SECONDS", "61"),
        ("STUDIO_POLL_MAX_SECONDS", "soon"),
    ],
)
def test_a_bad_worker_thread_count_or_poll_interval_is_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value}, secrets_path=NO_SECRETS)
