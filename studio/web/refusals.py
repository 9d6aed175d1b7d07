"""Showing refusals: the one way a page shows that the studio refused something (a submit, an upload, a preset,
an admin action): the message, in place of what would have appeared, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from studio.errors import Forbidden, NotFound, Refused
from studio.web import app
from studio.web.text import plain

T = TypeVar("T")
# What the studio raises for the person at the page to read (studio.errors); anything else is a bug.
SHOWN = (Refused, Forbidden, NotFound)


def attempt(action: Callable[[], T]) -> T | None:
    """`action()`, or None with the refusal shown as an error."""
    try:
        return action()
    except SHOWN as exc:
        st.error(plain(str(exc)))  # messages quote what people typed (names, file names)
        return None


def admin_action(action: Callable[..., T], **kwargs) -> T | None:
    """One studio.accounts.admin action in a write transaction; None with the refusal shown."""

    def in_transaction() -> T:
        with app.db_write_session() as session:
            return action(session=session, **kwargs)

    return attempt(in_transaction)
