"""What people typed or uploaded, on the page as plain text.

Captions, messages, markdown, expander labels and image captions render Markdown (GitHub's, with Streamlit's
directives: `:red[…]`, `$…$` maths; a `:material/…:` icon or an emoji short code is only a picture). A prompt, a name
or a file name put into one of them as is is markup: `![](https://…)` loads a remote image in whoever's browser shows
it (an admin's team History), `[text](url)` is a link that reads as the studio's own, `&lt;` shows as `<`. `plain`
puts the text on one line (a line break would start a new block) and escapes with a backslash (which CommonMark
allows before any ASCII punctuation) each character that can start markup inside a line, what can start a block at
its beginning, and what GitHub's Markdown turns into a link by itself (`www.`, `://`, an e-mail address). Prose
punctuation (. , : ; ' " ( ) - ? %) stays as it is, so messages read the same in tests. Widgets that show options as
text (selectbox, dataframe) need none of this.
"""

from __future__ import annotations

import re

_INLINE = re.compile(r"([\\`*_\[\]<>!#|~$@&])")  # emphasis, code, links and images, HTML, entities, maths, directives
_BLOCK_START = re.compile(r"^(\d*)([-+=.)])")  # a list item (`- `, `+ `, `1. `, `1) `) or a setext underline
_AUTOLINK = re.compile(r"(www|:/)([./])", re.IGNORECASE)  # what GitHub's Markdown links by itself: www. and ://


def plain(value: object) -> str:
    """`value` as text for a Markdown-rendering element: shown exactly as written, on one line."""
    text = _INLINE.sub(r"\\\1", " ".join(str(value).split()))
    return _AUTOLINK.sub(r"\1\\\2", _BLOCK_START.sub(r"\1\\\2", text))
