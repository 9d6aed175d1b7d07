"""One definition per limit: every numeric widget gets its numbers by keyword (min_value=, max_value=, value=,
step=), so a reader sees which number is which, and the ranges come from named constants the server-side checks
use too. Read from the source of every page and Streamlit helper, so a new widget is covered as it is written."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from studio.config import PROJECT_ROOT

ROOT = PROJECT_ROOT
# Streamlit widgets that take numbers: only their label may be positional.
NUMERIC_WIDGETS = {"slider", "select_slider", "number_input", "date_input", "time_input"}


def ui_sources() -> list[Path]:
    return sorted(
        path
        for path in [ROOT / "streamlit_app.py", *ROOT.glob("pages/**/*.py"), *ROOT.glob("studio/**/*.py")]
        if "streamlit" in path.read_text()
    )


def positional_numbers(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}(…) has {len(node.args)} positional arguments"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in NUMERIC_WIDGETS
        and len(node.args) > 1
    ]


def test_the_sources_with_widgets_are_found():
    names = {path.name for path in ui_sources()}
    assert {"streamlit_app.py", "transform.py", "compare.py"} <= names


@pytest.mark.parametrize("path", ui_sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_numeric_widgets_take_their_numbers_by_keyword(path):
    assert positional_numbers(path) == []
