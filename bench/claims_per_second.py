"""Queue claims per second with 1, 2 and 4 worker processes, on PostgreSQL and on SQLite (empty jobs).

Run from the repository root:

    python bench/claims_per_second.py                  # 2000 jobs per run, 1/2/4 processes, both databases
    python bench/claims_per_second.py --jobs 5000 --processes 1 2 4 8
    python bench/claims_per_second.py --jobs 100000 --users 50 --claims 1000 --repeats 3 --before main

Each database starts with `--jobs` queued jobs (rows only: no image, no credits) of `--users`
users, submitted in turns (job n is user n mod users'; with the fair queue, each user's k-th job in its lane is
in round k, as submits would have put it; every third user is on the Free plan, every other job a batch item),
and N processes (spawned, each with its own engine) that call `studio.jobs.leases.claim_next` in its own write
transaction until they have made `--claims` claims together (default: until the queue is empty): what a worker
does before it runs anything. Prints the claims per second of the whole run, from the moment all processes are
connected and told to start until the last one is done. With `--before REF`, the same runs are made against
that commit's code too (bench/before_after.py), run by run alternately, and the ratio of the medians is printed.
A database is filled once per version: later runs claim from the head of the queue the previous ones left.
PostgreSQL is a throwaway cluster (studio.devtools.pgcluster: initdb into a temporary folder, a free loopback port;
fsync off, like the tests); SQLite is a file in WAL mode in a temporary folder. Nothing under data/ is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert
from sqlmodel import select

from bench.before_after import checkout, run_script
from studio.billing.plans import queue_priority
from studio.db.engine import get_engine, init_db, write_session
from studio.db.tables import Job, JobStatus, Plan, User
from studio.devtools.pgcluster import PgCluster, Unavailable
from studio.jobs.leases import claim_next

try:  # the fair queue's lanes and rounds (absent before it)
    from studio.jobs.fair_queue import queue_lane
except ImportError:
    queue_lane = None


def fill(url: str, jobs: int, users: int) -> None:
    """`jobs` queued rows of `users` users, submitted in turns, in the lanes and rounds a submit gives them."""
    init_db(url)
    with write_session(url) as session:
        people = [
            User(
                username=f"bench{n}",
                email=f"bench{n}@example.com",
                display_name=f"bench {n}",
                password_hash="x",
                plan=Plan.free if n % 3 == 2 else Plan.pro_monthly,
            )
            for n in range(users)
        ]
        session.add_all(people)
        session.flush()
        rounds: Counter = Counter()
        rows = []
        template = Job(model="preview", user_id=people[0].id, params={}).model_dump(exclude={"id"})
        for n in range(jobs):
            user = people[n % users]
            priority, batch = queue_priority(user), n % 2 == 1 and user.plan is not Plan.free
            row = dict(template, user_id=user.id, priority=priority, batch_id=f"batch-{user.id}" if batch else None)
            if queue_lane is not None:
                lane = queue_lane(priority=priority, batch=batch)
                row.update(lane=lane, fair_tag=rounds[user.id, lane])
                rounds[user.id, lane] += 1
            rows.append(row)
        for start in range(0, jobs, 10_000):
            session.execute(insert(Job), rows[start : start + 10_000])
        session.commit()
    get_engine(url).dispose()


def queued(url: str) -> int:
    init_db(url)
    with write_session(url) as session:
        return session.exec(select(func.count()).select_from(Job).where(Job.status == JobStatus.queued)).one()


def claimer(url: str, name: str, quota: int, ready, start, results) -> None:
    with write_session(url) as session:  # connect (and warm the statement cache) before the start
        session.connection()
    ready.put(name)
    start.wait()
    claims = 0
    while claims < quota:
        with write_session(url) as session:
            if claim_next(session=session, worker=name) is None:
                break
        claims += 1
    results.put((name, claims, time.perf_counter()))


def run(url: str, processes: int, jobs: int, users: int, claims: int) -> float:
    if not queued(url):  # repeats go on with the queue the previous run left (a few claims shorter)
        fill(url, jobs, users)
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    quota = -(-claims // processes)
    children = [
        context.Process(target=claimer, args=(url, f"w{n}", quota, ready, start, results)) for n in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    outcomes = []
    while len(outcomes) < len(children):
        try:
            outcomes.append(results.get(timeout=5))
        except queue.Empty:  # a claimer that crashed (its traceback is on stderr) puts nothing
            if failed := [child.exitcode for child in children if child.exitcode not in (None, 0)]:
                raise RuntimeError(f"claimer processes exited with {failed}") from None
    for child in children:
        child.join(30)
    claimed = sum(n for _, n, _ in outcomes)
    assert claimed >= min(claims, jobs), f"{claimed} claims of {min(claims, jobs)}"
    return claimed / (max(end for _, _, end in outcomes) - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--claims", type=int, default=None, help="claims per run (default: every job)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (median reported)")
    parser.add_argument("--before", help="also run the commit REF's code, alternately, and print the ratio")
    parser.add_argument("--db", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--workdir", help="keep the SQLite files here (and reuse the queues they hold)")
    parser.add_argument("--url", help=argparse.SUPPRESS)  # one run against this empty database, as JSON
    args = parser.parse_args()
    claims = args.claims or args.jobs
    if args.url:
        print(json.dumps(run(args.url, args.processes[0], args.jobs, args.users, claims)))
        return 0
    print(
        f"{args.jobs} empty jobs of {args.users} user(s), {claims} claims per run, claim_next in its own "
        f"transaction per claim; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}"
    )
    with contextlib.ExitStack() as stack:
        before = stack.enter_context(checkout(args.before)) if args.before else None
        folder = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="claims-bench-"))
        databases = [("SQLite (WAL)", lambda name: f"sqlite:///{folder}/{name}.db")] if "sqlite" in args.db else []
        if "postgresql" in args.db:
            try:
                cluster = PgCluster.start()
            except Unavailable as exc:
                print(f"PostgreSQL skipped: {exc}")
            else:
                stack.callback(cluster.stop)
                databases.append(("PostgreSQL", cluster.create_database))
        versions = [("after", None)] + ([(f"before ({args.before})", before)] if before else [])
        # One database per version and kind, filled once: each run claims from the head of a full queue.
        urls = {
            (database, label): new_url(f"bench_{n}")
            for database, new_url in databases
            for n, (label, _) in enumerate(versions)
        }
        header = "  ".join(f"{label + ' claims/s':>24}" for label, _ in versions)
        print(f"{'database':<14} {'processes':>9} {header}" + ("  after/before" if before else ""), flush=True)
        for database, _ in databases:
            for n in args.processes:
                measured = {label: [] for label, _ in versions}
                for repeat in range(args.repeats):
                    for label, tree in reversed(versions) if repeat % 2 else versions:  # alternate the first
                        run_args = ["--url", urls[database, label], "--processes", str(n), "--claims", str(claims)]
                        run_args += ["--jobs", str(args.jobs), "--users", str(args.users)]
                        measured[label].append(one_run(tree, run_args))
                rates = {label: statistics.median(runs) for label, runs in measured.items()}
                figures = "  ".join(f"{rates[label]:>24.0f}" for label, _ in versions)
                ratio = f"  {rates['after'] / rates[versions[1][0]]:>12.2f}" if before else ""
                print(f"{database:<14} {n:>9} {figures}{ratio}   (runs: {measured})", flush=True)
    return 0


def one_run(tree: Path | None, run_args: list[str]) -> float:
    """One run in a fresh process: this checkout's code, or the tree's (the earlier commit's)."""
    if tree is None:
        out = subprocess.run([sys.executable, __file__, *run_args], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    return float(run_script(tree, Path(__file__), run_args).strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
