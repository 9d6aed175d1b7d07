"""Live panels (job, sweep, batch) poll less often while nothing they show changes (studio.web.live)."""

from __future__ import annotations

import ast

from streamlit.testing.v1 import AppTest

from studio.web.live import POLL_SECONDS, next_poll_seconds


def test_the_interval_doubles_while_nothing_changes_and_drops_back_at_the_first_change():
    intervals, previous = [], None
    for shown in ["queued 3", "queued 3", "queued 3", "queued 3", "queued 3", "queued 2", "step 1", "step 1"]:
        interval = next_poll_seconds(previous, shown, longest=4.0)
        intervals.append(interval)
        previous = (shown, interval)
    assert intervals == [POLL_SECONDS, 2.0, 4.0, 4.0, 4.0, POLL_SECONDS, POLL_SECONDS, 2.0]


def test_a_longest_interval_of_one_second_means_no_back_off():
    assert next_poll_seconds(("same", 1.0), "same", longest=1.0) == 1.0


def _fragment_rearming_its_timer() -> None:
    import streamlit as st
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    from studio.web import live

    ctx, sent = get_script_run_ctx(), []
    enqueue = ctx.enqueue
    ctx.enqueue = lambda message: (sent.append(message), enqueue(message))[1]
    st.fragment(lambda: live._rearm_poll(2.5), run_every=1.0)()
    timers = [(m.auto_rerun.fragment_id, m.auto_rerun.interval) for m in sent if m.HasField("auto_rerun")]
    st.write(repr(timers))


def test_a_fragment_can_reset_its_own_timer_on_this_streamlit():
    """The back-off talks to Streamlit internals; this fails (rather than polling silently at 1 s) if they move."""
    at = AppTest.from_function(_fragment_rearming_its_timer).run()
    assert not at.exception
    (declared, rearmed) = ast.literal_eval(at.markdown[0].value)
    assert declared[1] == 1.0 and rearmed[1] == 2.5
    assert rearmed[0] == declared[0] != ""


def _panel_showing(shown_by_run: list[str]) -> None:
    """A live panel whose body shows the next of `shown_by_run` each time it runs (its fragment rerun by hand)."""
    import streamlit as st

    from studio.web.live import live_panel, poll_backoff

    def body() -> None:
        runs = st.session_state.setdefault("runs", [])
        poll_backoff("poll.test", shown_by_run[len(runs)])
        runs.append(st.session_state["poll.test"][1])
        st.write(repr(runs))

    live_panel("poll.test", body, live=True)
    for _ in shown_by_run[1:]:
        body()  # what a fragment rerun does


def test_a_panel_backs_off_while_it_shows_the_same_and_a_full_run_starts_again_at_one_second(studio_settings):
    at = AppTest.from_function(_panel_showing, args=(["queued 1", "queued 1", "queued 1", "step 1"],)).run()
    assert not at.exception
    assert ast.literal_eval(at.markdown[-1].value) == [1.0, 2.0, 4.0, 1.0]
    at.session_state["runs"] = []
    at.run()  # a full run (the page reran): the panel's interval starts afresh
    assert ast.literal_eval(at.markdown[-1].value) == [1.0, 2.0, 4.0, 1.0]
