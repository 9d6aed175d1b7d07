"""Queue claims per second with 1, 2 and 4 worker processes, on PostgreSQL and on SQLite (empty jobs).

Run from the repository root:

    python bench/claims_per_second.py                  # 2000 jobs per run, 1/2/4 processes, both databases
    python bench/claims_per_second.py --jobs 5000 --processes 1 2 4 8

Each run starts from a fresh database with `--jobs` queued jobs (rows only: no image, no credits) and
N processes (spawned, each with its own engine) that call `studio.jobs.leases.claim_next` in its own write
transaction until the queue is empty: what a worker does before it runs anything. Prints the claims
per second of the whole run, from the moment all processes are connected and told to start until the
last one finds the queue empty. PostgreSQL is a throwaway cluster (studio.devtools.pgcluster: initdb into a
temporary folder, a free loopback port; fsync off, like the tests); SQLite is a file in WAL mode in
a temporary folder. Nothing under data/ is touched.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.db.engine import get_engine, init_db, write_session
from studio.db.tables import Job, User
from studio.devtools.pgcluster import PgCluster, Unavailable
from studio.jobs.leases import claim_next


def fill(url: str, jobs: int) -> None:
    init_db(url)
    with write_session(url) as session:
        user = User(username="bench", email="b@example.com", display_name="bench", password_hash="x")
        session.add(user)
        session.flush()
        session.add_all(Job(model="preview", user_id=user.id, params={}) for _ in range(jobs))
        session.commit()
    get_engine(url).dispose()


def claimer(url: str, name: str, ready, start, results) -> None:
    with write_session(url) as session:  # connect (and warm the statement cache) before the start
        session.connection()
    ready.put(name)
    start.wait()
    claims = 0
    while True:
        with write_session(url) as session:
            if claim_next(session=session, worker=name) is None:
                break
        claims += 1
    results.put((name, claims, time.perf_counter()))


def run(url: str, processes: int, jobs: int) -> float:
    fill(url, jobs)
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    children = [context.Process(target=claimer, args=(url, f"w{n}", ready, start, results)) for n in range(processes)]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    outcomes = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(30)
    claimed = sum(claims for _, claims, _ in outcomes)
    assert claimed == jobs, f"{claimed} claims for {jobs} jobs"
    return jobs / (max(end for _, _, end in outcomes) - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(f"{args.jobs} empty jobs per run, claim_next in its own transaction per claim; {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="claims-bench-") as tmp:
        for n in args.processes:
            rows.append(("SQLite (WAL)", n, run(f"sqlite:///{tmp}/bench-{n}.db", n, args.jobs)))
    try:
        cluster = PgCluster.start()
    except Unavailable as exc:
        print(f"PostgreSQL skipped: {exc}")
    else:
        try:
            for n in args.processes:
                rows.append(("PostgreSQL", n, run(cluster.create_database(f"bench_{n}"), n, args.jobs)))
        finally:
            cluster.stop()
    print(f"{'database':<14} {'processes':>9} {'claims/s':>9}")
    for database, n, rate in rows:
        print(f"{database:<14} {n:>9} {rate:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
