"""Live panels (a job's, a sweep's, a batch's): a fragment that polls the database while its subject runs, every
second while what it shows changes and less often while it does not.

bench/served.py --watchers measures what polling costs the server (README → Benchmarks → served studio).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import streamlit as st

from studio.web.app import settings

# The interval while what a panel shows changes; each run that shows the same as the last doubles it, up to
# STUDIO_POLL_MAX_SECONDS (a queued job's position, a slow denoising step).
POLL_SECONDS = 1.0


def live_panel(key: str, body: Callable[..., None], *args: object, live: bool) -> None:
    """Draw `body(*args)` as a fragment that reruns itself while `live`; the body reports what it showed with
    `poll_backoff(key, …)`. The full run that draws it starts the interval afresh."""
    st.session_state.pop(key, None)
    st.fragment(body, run_every=POLL_SECONDS if live else None)(*args)


def next_poll_seconds(previous: tuple[Hashable, float] | None, shown: Hashable, longest: float) -> float:
    """The interval after a run that showed `shown`, given the last run's (shown, interval)."""
    if previous is None or previous[0] != shown:
        return POLL_SECONDS
    return min(previous[1] * 2, longest)


def poll_backoff(key: str, shown: Hashable) -> None:
    """Called by a live panel's body with what it showed: poll less often while that stays the same."""
    previous = st.session_state.get(key)
    interval = next_poll_seconds(previous, shown, settings().poll_max_seconds)
    st.session_state[key] = (shown, interval)
    if previous is not None and interval != previous[1]:
        _rearm_poll(interval)


def _rearm_poll(seconds: float) -> None:
    """Set the running fragment's timer in the browser to `seconds`.

    st.fragment tells the browser its run_every only in the run that declares the fragment; the browser keeps one
    timer per fragment and replaces it when a message names another interval, which is the message sent here.
    Streamlit internals (1.67, pinned; tests/web/test_live_panels.py fails if they move): should they move anyway,
    the panel keeps polling every POLL_SECONDS rather than failing.
    """
    try:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState, get_script_run_ctx

        ctx, fragment_id = get_script_run_ctx(), ThreadState.get().fragment_id
    except (ImportError, AttributeError, RuntimeError):
        return
    if ctx is None or not fragment_id:
        return
    message = ForwardMsg()
    message.auto_rerun.interval = seconds
    message.auto_rerun.fragment_id = fragment_id
    ctx.enqueue(message)
