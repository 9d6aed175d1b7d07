"""What people type is shown as plain text: `studio.web.text.plain` against a CommonMark renderer, and History's
card of a job whose prompt is markup (an admin sees their team's jobs the same way)."""

from __future__ import annotations

import html

from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from studio.config import get_settings
from studio.db.engine import write_session
from studio.web.text import plain
from tests.support import queue_job, signed_in_page, texts

COMMONMARK = MarkdownIt("commonmark").enable(["table", "strikethrough"])
HOSTILE = "![](https://evil.example/beacon.png) [the studio](https://evil.example) <b>**bold**</b> &lt; $x$ :red[x]"


def rendered(text: str) -> str:
    return COMMONMARK.render(text).strip()


# Printable text, as typed or uploaded (NUL and other controls are replaced or dropped by every renderer).
TYPED = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f"), max_size=60)


@given(TYPED)
def test_plain_text_renders_as_exactly_the_text_on_one_line(text):
    one_line = " ".join(text.split())
    if not one_line:
        assert rendered(plain(text)) == ""
        return
    output = rendered(plain(text))
    assert output.startswith("<p>") and output.endswith("</p>")
    inner = output.removeprefix("<p>").removesuffix("</p>")
    assert "<" not in inner and html.unescape(inner) == one_line  # no element, every character as written


def test_what_github_markdown_links_by_itself_is_escaped_too():
    assert plain("www.example.com") == r"www\.example.com"
    assert plain("https://example.com") == r"https:/\/example.com"
    assert plain("mia@example.com") == r"mia\@example.com"


def test_prose_reads_the_same():
    message = "Username or password is incorrect: try again (or ask an admin) - 50 % done?"
    assert plain(message) == message


def test_a_history_card_shows_a_markup_prompt_as_plain_text(studio):
    settings = get_settings()
    with write_session(settings.database_url) as session:
        job = queue_job(session, settings, prompt=HOSTILE, original_name="[x](https://evil.example).png")
    at = signed_in_page("history", "admin")
    assert not at.exception, at.exception
    [summary] = [caption for caption in texts(at.caption) if "beacon" in caption]
    assert "<img" not in rendered(summary) and "<a " not in rendered(summary)
    assert f"“{HOSTILE[:60]}" in html.unescape(rendered(summary))  # shown as typed
    assert not any("https://evil.example" in markdown for markdown in texts(at.markdown))
    assert job.id is not None
