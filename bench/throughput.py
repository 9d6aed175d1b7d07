"""Queue throughput: compatible jobs of several users one at a time (STUDIO_BATCH_MAX=1) vs batched in one loop.

Run from the repository root:

    python bench/throughput.py                      # 16 jobs of 4 users, K = 4, 256 px, 4 steps, 2 rounds
    python bench/throughput.py --size 256 --steps 8 --rounds 3 --threads 2
    # issue 20 on a GPU (bench/gpu_issue20.sh runs the whole set): tiny SD at 512², tiny SDXL at 1024², fp16
    python bench/throughput.py --device cuda --dtype float16 --size 512 --steps 20
    python bench/throughput.py --device cuda --dtype float16 --model preview-sdxl --size 1024 --steps 20
    python bench/throughput.py --device cuda --dtype float16 --size 512 --compile --attention _native_flash

Builds a throwaway studio in a temporary folder (SQLite, its own store and tiny preview model; nothing is
downloaded). Each round submits the same 16 compatible img2img jobs (4 users taking turns; own sources, prompts,
strengths, seeds and guidance; one size and step count) and drains the queue with one worker, once with K = 1
and once with K = batch, in alternating order per round (ABBA) so drift of a shared machine hits both alike.
Reported per mode: jobs per minute (jobs / wall time of the drain) and per-job latency (finish − start of the
drain, every job queued at the start) p50 and p95, medians over rounds; on a GPU the peak memory allocated; and the
load average before and after. `--dtype` states the dtype expected: the studio runs each family in its own dtype per
device (float16 on CUDA, float32 on a CPU), and the benchmark refuses to run when they differ.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("a watercolor lighthouse", "an oil painting of a harbour", "a pencil sketch of boats", "a neon city")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16, help="jobs per drain (default 16)")
    parser.add_argument("--users", type=int, default=4, help="users submitting them in turn (default 4)")
    parser.add_argument("--batch", type=int, default=4, help="K of the batched mode (default 4)")
    parser.add_argument("--size", type=int, default=256, help="source side in px (default 256, the smallest upload)")
    parser.add_argument("--steps", type=int, default=4, help="schedule length (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both modes (default 2)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="the dtype expected (see above)")
    parser.add_argument("--model", default="preview", help="a tiny preview model: preview (SD), preview-sdxl, …")
    parser.add_argument("--compile", action="store_true", help="STUDIO_COMPILE=1: torch.compile the denoiser")
    parser.add_argument("--attention", help="STUDIO_ATTENTION: the attention backend (default diffusers' own)")
    args = parser.parse_args(argv)
    if min(args.jobs, args.users, args.rounds) < 1 or not 2 <= args.batch <= 16:
        parser.error("--jobs, --users and --rounds must be at least 1, --batch 2–16")
    return args


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    root = Path(tempfile.mkdtemp(prefix="throughput-"))
    try:
        return run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> int:
    from bench.queue_overhead import configure_environment, funded_user, open_studio, source_png

    configure_environment(root, args.model)
    os.environ["STUDIO_MAX_OUTPUT_SIDE"] = str(max(1024, args.size))
    os.environ["STUDIO_COMPILE"] = "1" if args.compile else "0"
    if args.attention:
        os.environ["STUDIO_ATTENTION"] = args.attention
    load_before = os.getloadavg()

    import torch

    from pipelines.cache import pick_device, pick_dtype, set_device
    from pipelines.registry import resolve_model

    set_device(args.device)
    family = resolve_model(args.model, models_dir=root / "models").family
    dtype = str(pick_dtype(pick_device(), family)).removeprefix("torch.")
    if args.dtype is not None and args.dtype != dtype:
        raise SystemExit(f"{args.model} runs in {dtype} on {args.device}, not {args.dtype}")
    cuda = torch.device(args.device).type == "cuda"

    from pipelines.params import Img2ImgParams
    from studio.billing.pricing import QUALITY_TIERS
    from studio.catalogue.requests import custom_request
    from studio.db.engine import session_for, write_session
    from studio.db.tables import Job, JobStatus, utcnow
    from studio.jobs.submit import submit_job
    from studio.jobs.worker import Worker
    from studio.media.validation import validate_image_bytes

    settings, store = open_studio(args.threads)
    credits = 10 * args.jobs * (2 * args.rounds + 1)
    with session_for(settings.database_url) as session:
        users = [funded_user(session, f"user{n}", credits, "throughput benchmark") for n in range(args.users)]
    uploads = [validate_image_bytes(source_png(args.size, n), filename="bench.png") for n in range(args.jobs)]

    def submit_all(count: int) -> list[int]:
        ids = []
        for n in range(count):
            params = Img2ImgParams(
                prompt=PROMPTS[n % len(PROMPTS)],
                negative_prompt="blurry",
                strength=(0.5, 0.75, 1.0)[n % 3],
                steps=args.steps,
                guidance=(7.5, 1.0)[n % 2],
                seed=n,
            )
            quality = next(q for q, tier in QUALITY_TIERS.items() if params.steps <= tier.max_steps)
            with write_session(settings.database_url) as session:
                job = submit_job(
                    session=session,
                    store=store,
                    settings=settings,
                    user=users[n % len(users)],
                    upload=uploads[n],
                    original_name="bench.png",
                    request=custom_request(settings=settings, params=params, quality=quality),
                )
            ids.append(job.id)
        return ids

    def drain(batch_max: int, count: int) -> tuple[float, list[float]]:
        """Submit `count` jobs, run them with one worker; the wall seconds and each job's latency."""
        ids = submit_all(count)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        worker = Worker(replace(settings, batch_max=batch_max), name=f"bench-k{batch_max}")
        started_at, started = utcnow(), time.perf_counter()
        while worker.run_once() is not None:
            pass
        wall = time.perf_counter() - started
        with session_for(settings.database_url) as session:
            jobs = [session.get(Job, job_id) for job_id in ids]
        failed = [job.id for job in jobs if job.status is not JobStatus.complete]
        if failed:
            raise SystemExit(f"jobs {failed} did not complete")
        return wall, [(job.finished_at - started_at).total_seconds() for job in jobs]

    drain(args.batch, args.batch)  # warm-up: build and load the model, first calls
    modes = {1: "one at a time", args.batch: f"batched, K = {args.batch}"}
    figures: dict[int, list[tuple[float, float, float]]] = {k: [] for k in modes}
    for round_index in range(args.rounds):
        order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
        for k in order:
            wall, latencies = drain(k, args.jobs)
            row = (args.jobs / wall * 60, percentile(latencies, 0.5), percentile(latencies, 0.95))
            figures[k].append(row)
            shown = f"{row[0]:6.1f} jobs/min, p50 {row[1]:.2f} s, p95 {row[2]:.2f} s"
            if cuda:
                shown += f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated"
            print(f"round {round_index + 1} {modes[k]:>16}: {shown}")

    print(
        f"\n{args.jobs} jobs of {args.users} users, {args.model} on {args.device} in {dtype}, {args.size} px, "
        f"{args.steps} steps, compile {args.compile}, attention {args.attention or 'default'}, torch threads "
        f"{torch.get_num_threads()}, medians of {args.rounds} rounds:"
    )
    medians = {k: tuple(statistics.median(r[i] for r in rows) for i in range(3)) for k, rows in figures.items()}
    for k, (per_minute, p50, p95) in medians.items():
        print(f"  {modes[k]:>16}: {per_minute:6.1f} jobs/min, latency p50 {p50:.2f} s, p95 {p95:.2f} s")
    ratio = medians[args.batch][0] / medians[1][0]
    print(f"  batched / one at a time: {ratio:.2f}× jobs per minute")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
