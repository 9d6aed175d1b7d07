"""CSV files people open in a spreadsheet: every cell that would start a formula is written as text.

A spreadsheet reads a cell that starts with `=`, `+`, `-` or `@` as a formula (`=HYPERLINK(…)` is a link that
sends data away, DDE formulas run programs), and one that starts with a tab or a carriage return may be too. Every
text cell a CSV export writes (a ZIP member's name, a prompt, a display name, an audit target) that starts with one
of them gets a leading `'`, which spreadsheets show as text and do not display. Numbers stay numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """`value`, with a leading `'` when it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV file of `header` and `rows`, every cell neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([neutralise(cell) for cell in header])
    writer.writerows([neutralise(cell) for cell in row] for row in rows)
    return buffer.getvalue()


def frame_csv(frame: pd.DataFrame) -> str:
    """A CSV file of `frame` as pandas writes it (its column names as the header, no index), every cell
    neutralised."""
    safe = frame.map(neutralise).rename(columns=lambda name: neutralise(str(name)))
    return safe.to_csv(index=False)
