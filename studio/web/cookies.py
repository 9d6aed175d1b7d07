"""Storing the session cookie in the browser.

Streamlit cannot set a cookie on its HTTP responses, and `st.context.cookies` holds only the cookies the browser
sent when it opened the page. So a small component (components v2: it runs in the page itself, no iframe) writes
`document.cookie`. While a cookie instruction is pending (until the next sign-in or logout replaces it), every run
renders it again: a run that ends at once (the rerun right after signing in) cannot lose the cookie, which is
what happened with streamlit-authenticator's cookie component (an iframe
that had not loaded yet when the rerun removed it, so the login cookie was never stored).

The cookie is SameSite=Strict, Secure when the page is served over HTTPS, and not HttpOnly (script writes it);
what it holds is worth little alone: a signed random token whose session the server checks and can revoke.
"""

from __future__ import annotations

import secrets

import streamlit as st

_JS = """
export default function ({ data }) {
  if (!data) return;
  const secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${data.name}=${data.value}; Path=/; Max-Age=${data.max_age}; SameSite=Strict${secure}`;
}
"""
_writer = st.components.v2.component("studio_session_cookie", js=_JS)
_PENDING = "studio.cookie_pending"
STATE_KEYS = frozenset({_PENDING, "studio.cookie_writer"})  # what a browser session keeps across users


def store(name: str, value: str, *, max_age_s: int) -> None:
    """Have the browser keep cookie `name` for `max_age_s` seconds (0 deletes it), from this run on."""
    st.session_state[_PENDING] = {"name": name, "value": value, "max_age": max_age_s, "nonce": secrets.token_hex(8)}


def delete(name: str) -> None:
    store(name, "", max_age_s=0)


def write_pending() -> None:
    """Render the writer on every run while a cookie instruction is pending: writing the same cookie again is
    harmless, and a writer that reported back would trigger a rerun of its own (in the first session after a start
    that rerun raced the Transform form's first render and reset its strength slider to 0)."""
    pending = st.session_state.get(_PENDING)
    if pending is not None:
        _writer(key="studio.cookie_writer", data=pending)
