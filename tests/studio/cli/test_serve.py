"""`python -m studio serve`: README's command to serve the studio, its development flag, and the places that start
the studio the way README says (the browser tests, bench/served.py)."""

from __future__ import annotations

import re
import sys

from studio.cli.main import build_parser
from studio.cli.serve import SERVER_SCRIPT, streamlit_command
from tests.e2e.support import serve_command
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def command(*argv: str) -> list[str]:
    return streamlit_command(build_parser().parse_args(["serve", *argv]))


def test_serve_runs_the_server_entry_with_streamlit_and_only_the_options_given():
    assert command() == [sys.executable, "-m", "streamlit", "run", SERVER_SCRIPT]
    assert (ROOT / SERVER_SCRIPT).is_file()
    assert command("--port", "8600", "--address", "127.0.0.1")[5:] == [
        "--server.port",
        "8600",
        "--server.address",
        "127.0.0.1",
    ]


def test_dev_turns_the_file_watcher_back_on():
    assert command("--dev")[5:] == ["--server.fileWatcherType", "auto"]


def test_readme_serves_the_studio_with_serve_and_documents_the_development_flag():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^python -m studio serve\s", quick_start, re.MULTILINE)
    assert "python -m studio serve --dev" in README
    assert "streamlit run streamlit_app.py " not in quick_start


def test_the_browser_tests_and_the_benchmark_serve_the_studio_as_readme_says():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import served
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert " ".join(served.SERVE_COMMAND) == "python -m studio serve"
    assert serve_command(8600)[1:] == ["-m", "studio", "serve", "--port", "8600", "--address", "127.0.0.1"]
