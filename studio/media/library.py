"""The user's image library: every upload (a job's source) and every result they made, newest first, searchable.

Pages offer it beside *Upload* (studio.web.library), so a photo uploaded once can be the source of every later run.
Every query is scoped to one user: nobody sees another person's images, whatever they search for.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_
from sqlmodel import Session, col, select

from studio.db.tables import Asset, AssetKind, Job

LIBRARY_KINDS = (AssetKind.source, AssetKind.result)
MAX_SEARCH_LENGTH = 200
# Rows read per item wanted: the same upload used for several jobs is one item (rows are deduplicated by content).
_ROWS_PER_ITEM = 4


@dataclass(frozen=True)
class LibraryItem:
    asset: Asset
    job: Job | None  # the job that made it, for a result

    @property
    def label(self) -> str:
        """A file name for an upload; for a result, its job and what the user asked for."""
        if self.job is None:
            return self.asset.original_name or f"upload {self.asset.id}"
        prompt = self.job.params.get("user_prompt", self.job.params.get("prompt", ""))
        what = self.job.style or "own settings"
        return f"result #{self.job.id} · {what}" + (f" · {prompt[:40]}" if prompt else "")


def library_items(*, session: Session, user_id: int, search: str = "", limit: int = 12) -> list[LibraryItem]:
    """The user's uploads and results, newest first, each image once; `search` (case-insensitive) matches an upload's
    file name, or a result's prompt, negative prompt or style."""
    query = (
        select(Asset, Job)
        .outerjoin(Job, col(Job.result_asset_id) == col(Asset.id))
        .where(Asset.user_id == user_id, col(Asset.kind).in_(LIBRARY_KINDS))
    )
    if text := search.strip()[:MAX_SEARCH_LENGTH]:
        pattern = f"%{_escaped(text)}%"
        query = query.where(
            or_(
                col(Asset.original_name).ilike(pattern, escape="\\"),
                Job.params["user_prompt"].as_string().ilike(pattern, escape="\\"),
                Job.params["prompt"].as_string().ilike(pattern, escape="\\"),
                col(Job.style).ilike(pattern, escape="\\"),
            )
        )
    rows = session.exec(
        query.order_by(col(Asset.created_at).desc(), col(Asset.id).desc()).limit(limit * _ROWS_PER_ITEM)
    ).all()
    items: dict[str, LibraryItem] = {}
    for asset, job in rows:
        items.setdefault(asset.sha256, LibraryItem(asset=asset, job=job))
    return list(items.values())[:limit]


def user_result_item(*, session: Session, user_id: int, job_id: int) -> LibraryItem | None:
    """A job's result as a library item, only if the job is the user's and its result is still stored."""
    job = session.get(Job, job_id)
    if job is None or job.user_id != user_id or job.result_asset_id is None:
        return None
    asset = session.get(Asset, job.result_asset_id)
    return LibraryItem(asset=asset, job=job) if asset is not None else None


def _escaped(text: str) -> str:
    """`text` matched literally by LIKE: its wildcards (% and _) and the escape character itself escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
