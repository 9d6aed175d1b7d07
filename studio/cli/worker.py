"""`python -m studio worker`: a queue worker as its own process (one per GPU)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pipelines import import_model_stack
from studio.config import get_settings
from studio.db.engine import init_db
from studio.jobs.leases import LEASE_SECONDS
from studio.jobs.worker import Worker


def positive_seconds(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {value}")
    return seconds


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "worker",
        help="run a queue worker (one per GPU; SIGTERM finishes the job in hand)",
        description="Run an Img2Img Studio queue worker against the configured database (STUDIO_* settings).",
    )
    parser.add_argument("--name", help="worker name shown on jobs (default: host:pid:random)")
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument("--poll", type=positive_seconds, default=0.5, help="seconds between looks at an empty queue")
    parser.add_argument("--lease", type=positive_seconds, default=LEASE_SECONDS, help="lease length in seconds")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); with several CPU workers per host use cores ÷ workers",
    )
    parser.add_argument(
        "--device",
        help="torch device for this worker's models: cuda:0, cuda:1, … (one process per GPU), cpu, mps "
        "(default: the first GPU if there is one, else cpu)",
    )
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # init_db's migration chatter

    if args.device:  # loads the model code now; the heartbeat then reports this device from the first beat
        import_model_stack()
        from pipelines.cache import set_device

        try:
            set_device(args.device)
        except (RuntimeError, ValueError) as exc:
            args.parser.error(f"--device {args.device}: {exc}")
    settings = get_settings()
    init_db(settings.database_url)
    worker = Worker(settings, name=args.name, lease_seconds=args.lease, threads=args.threads or None)
    if args.once:
        worker.run_once()
        return 0
    if settings.warmup:
        worker.warm_up()
    stop = threading.Event()
    # SIGTERM/SIGINT: finish the job in hand, then exit (its lease would otherwise expire and requeue it).
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.run_forever(stop, poll_seconds=args.poll)
    return 0
