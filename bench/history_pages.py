"""History pages at scale: one user with 100 000 jobs (among other users' jobs) in SQLite.

Run from the repository root:

    python bench/history_pages.py                 # 100 000 jobs for the user, 50 000 for others
    python bench/history_pages.py --jobs 1000000

Builds a throwaway database in a temporary folder (bulk inserts, nothing under data/ touched), then
times, each the median of 7 runs: the first page, a deep page (after the 80 000th job: keyset
pagination makes it cost what the first does), a page filtered by status, by style, and by text in the
prompt (a scan of the user's rows; the slowest filter), and the team view.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs of the measured user (default 100 000)")
    parser.add_argument("--others", type=int, default=50_000, help="jobs of other users (default 50 000)")
    args = parser.parse_args(argv)

    from sqlmodel import col, select

    from studio.db.engine import init_db, session_for
    from studio.db.tables import Job, JobStatus, Role, Team, User, utcnow
    from studio.jobs.history import HistoryFilter, history_page

    with tempfile.TemporaryDirectory(prefix="history-bench-") as folder:
        url = f"sqlite:///{folder}/bench.db"
        engine = init_db(url)
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(Team.__table__.insert(), [{"name": "Design", "created_at": utcnow()}])
            conn.execute(
                User.__table__.insert(),
                [
                    {
                        "username": name,
                        "email": f"{name}@x.io",
                        "display_name": name,
                        "role": role,
                        "plan": "free",
                        "is_active": True,
                        "team_id": 1,
                        "can_use_team_pool": False,
                        "password_hash": "-",
                        "created_at": utcnow(),
                    }
                    for name, role in (("measured", Role.admin.value), ("other", Role.member.value))
                ],
            )
        rng, now = random.Random(0), utcnow()
        styles = [None, "artistic", "anime", "cartoon", "photorealistic"]
        words = ["sneaker", "handbag", "watch", "lamp", "chair", "bottle", "jacket", "phone"]
        statuses = [JobStatus.complete] * 8 + [JobStatus.failed, JobStatus.cancelled]
        for user_id, count in ((1, args.jobs), (2, args.others)):
            for offset in range(0, count, 20_000):
                rows = []
                for index in range(offset, min(count, offset + 20_000)):
                    prompt = f"a {rng.choice(words)} on a {rng.choice(words)}, product photo {index}"
                    rows.append({
                        "task": "img2img", "model": "preview", "style": rng.choice(styles),
                        "params": {"prompt": prompt, "user_prompt": prompt, "strength": 0.5, "seed": index},
                        "user_id": user_id, "team_id": 1, "status": rng.choice(statuses).name, "priority": 0,
                        "progress_step": 0, "progress_total": 0, "quality": "standard", "cost": 1,
                        "cancel_requested": False, "attempt": 1, "lane": 0, "fair_tag": 0,
                        "created_at": now - timedelta(seconds=count - index + rng.random()),
                    })  # fmt: skip
                with engine.begin() as conn:
                    conn.execute(Job.__table__.insert(), rows)
        print(f"built {args.jobs + args.others:,} jobs in {time.perf_counter() - started:.1f} s")

        with session_for(url) as session:
            measured = session.get(User, 1)
            deep = session.exec(
                select(Job.created_at, Job.id)
                .where(Job.user_id == 1)
                .order_by(col(Job.created_at).desc(), col(Job.id).desc())
                .offset(min(80_000, args.jobs - 30))
                .limit(1)
            ).one()
        cases = {
            "first page": (HistoryFilter(), None),
            f"page after job #{min(80_000, args.jobs - 30):,} (keyset)": (HistoryFilter(), tuple(deep)),
            "status = failed": (HistoryFilter(statuses=(JobStatus.failed,)), None),
            "style = anime": (HistoryFilter(style="anime"), None),
            "prompt contains 'lamp on a watch'": (HistoryFilter(text="lamp on a watch"), None),
            "team view (admin)": (HistoryFilter(team=True), None),
        }
        print(f"{'page of 24':45} {'median ms':>10} {'rows':>5}")
        for label, (filters, after) in cases.items():
            times = []
            for _ in range(7):
                with session_for(url) as session:
                    begun = time.perf_counter()
                    page = history_page(session=session, viewer=measured, filters=filters, after=after)
                    times.append(time.perf_counter() - begun)
            print(f"{label:45} {statistics.median(times) * 1000:10.1f} {len(page.rows):5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
