"""The source image of a run: what a page's source picker (studio.web.library) hands the page."""

from __future__ import annotations

from dataclasses import dataclass

from studio.media.validation import ValidatedImage


@dataclass(frozen=True)
class Source:
    upload: ValidatedImage
    name: str
    recipe: dict | None  # set when the file is a result made by this studio
    job_id: int | None = None  # the job whose result it is, when picked from the library or opened from a result
