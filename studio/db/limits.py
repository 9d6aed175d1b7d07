"""Text that fits its column, checked before it reaches the database.

PostgreSQL refuses a value longer than its VARCHAR with a DataError (a traceback, after the transaction did its
other work); SQLite stores it silently. The services check every name a person types against the column's own
length (`Field(max_length=…)` in studio.db.tables), so the limit is written once and both databases behave alike.
Text kept only for display that nobody chose for the studio (an uploaded file's name) is shortened instead.
"""

from __future__ import annotations

from sqlalchemy import Column

from studio.errors import Refused


def bounded_text(value: str, *, column: Column, what: str) -> str:
    """`value` with surrounding spaces removed; Refused if it is empty or longer than `column` holds.

    `what` names the value for the message, with its article: "A display name"."""
    value = value.strip()
    limit = column.type.length
    if not value:
        raise Refused(f"{what} cannot be empty.")
    if len(value) > limit:
        raise Refused(f"{what} has at most {limit} characters; this one has {len(value)}.")
    return value


def clipped_text(value: str, *, column: Column) -> str:
    """`value` shortened to what `column` holds, its start and end kept around a "…" (a file name keeps its
    extension); for display-only text where refusing would be worse than shortening."""
    limit = column.type.length
    if len(value) <= limit:
        return value
    tail = (limit - 1) // 2
    return value[: limit - 1 - tail] + "…" + value[len(value) - tail :]
