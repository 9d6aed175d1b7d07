"""Peak memory and time of reading batch uploads: one 10 MB ZIP of 4096² PNGs, and three at once, before and after.

Run from the repository root:

    python bench/batch_upload_memory.py                       # this checkout and main, side by side
    python bench/batch_upload_memory.py --before HEAD~3 --limit-gb 6

The ZIP holds as many 4096×4096 PNGs of one colour as fit in 10 MB (stored, not compressed again; each image
differs from the others in its last row, so none is a duplicate): the upload the issue measured, which costs the
most decoded pixels per uploaded byte. Each scenario runs in a fresh process that does what the Batch page does
for each session that uploaded the files: it holds the uploaded bytes and calls `studio.batches.uploads
.read_uploads` on them (three sessions at once: three threads, as Streamlit runs them, with three different
ZIPs). Peak RSS is sampled every 10 ms from /proc and checked against the kernel's own figure (ru_maxrss);
time is wall-clock from the first read to the last result. A process whose RSS passes `--limit-gb` is stopped
there (reported as "> limit"), so a run never takes the shared machine down. "before" is the commit named by
`--before` (its files, extracted by bench/before_after.py), with this script.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIDE = 4096
ZIP_BYTES = 10 * 1024 * 1024


# The uploads


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def solid_pngs(count: int, colour: tuple[int, int, int]) -> list[bytes]:
    """`count` different SIDE² RGB PNGs of one colour (each with its own last row); the shared rows are compressed
    once, which makes building a few hundred of them quick."""
    row = b"\x00" + bytes(colour) * SIDE
    shared = zlib.compressobj(6)
    head = shared.compress(row * (SIDE - 1))
    header = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0))
    pngs = []
    for n in range(count):
        own = shared.copy()
        last = b"\x00" + n.to_bytes(3, "big") + bytes(colour) * (SIDE - 1)
        idat = head + own.compress(last) + own.flush()
        pngs.append(header + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return pngs


def build_zip(path: Path, colour: tuple[int, int, int]) -> int:
    """A ZIP of as many solid SIDE² PNGs as fit in ZIP_BYTES; the number of images."""
    one = len(solid_pngs(1, colour)[0]) + 100  # with its ZIP headers
    pngs = solid_pngs(ZIP_BYTES // one, colour)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for n, png in enumerate(pngs):
            archive.writestr(f"photos/img-{n:03d}.png", png)
    return len(pngs)


# One scenario, in its own process


class PeakRss(threading.Thread):
    """Samples this process's RSS; past `limit` bytes it reports and ends the process."""

    def __init__(self, limit: int, began: float) -> None:
        super().__init__(daemon=True)
        self.limit, self.began, self.peak = limit, began, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            rss = _rss()
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                print(json.dumps({"over_limit": True, "peak": rss, "seconds": time.perf_counter() - self.began}))
                sys.stdout.flush()
                os._exit(0)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(zips: list[Path], limit: int) -> None:
    from studio.batches import uploads

    staged = "staging" in inspect.signature(uploads.read_uploads).parameters  # the bounded reader (after)
    held = [path.read_bytes() for path in zips]  # what Streamlit holds: each session's uploaded file
    baseline = _rss()
    results: list[tuple[int, int] | None] = [None] * len(zips)
    with tempfile.TemporaryDirectory(prefix="staging-bench-") as folder:

        def read(index: int) -> None:
            name = zips[index].name
            if staged:
                from studio.config import Settings
                from studio.media.storage import AssetStore

                got = uploads.read_uploads(
                    [(name, io.BytesIO(held[index]))],
                    staging=AssetStore(Path(folder) / "staging"),
                    max_pixels=Settings.max_batch_megapixels * 1_000_000,  # the default cap
                )
            else:
                got = uploads.read_uploads([(name, held[index])])
            results[index] = (len(got.images), len(got.rejected))

        began = time.perf_counter()
        sampler = PeakRss(limit, began)
        sampler.start()
        threads = [threading.Thread(target=read, args=(n,)) for n in range(len(zips))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
        sampler.done.set()
    peak = max(sampler.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"over_limit": False, "peak": peak, "baseline": baseline, "seconds": seconds, "read": results}))


# Both trees, both scenarios


def scenario(tree: Path | None, zips: list[Path], limit_gb: float) -> dict:
    args = ["--child", "--limit-gb", str(limit_gb), *map(str, zips)]
    if tree is None:
        out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True).stdout
    else:
        from bench.before_after import run_script

        out = run_script(tree, Path(__file__), args)
    return json.loads(out.strip().splitlines()[-1])


def describe(result: dict, limit_gb: float) -> str:
    if result["over_limit"]:
        return f"> {limit_gb:.1f} GB (stopped after {result['seconds']:.1f} s)"
    images = sum(n for n, _ in result["read"])
    skipped = sum(n for _, n in result["read"])
    return (
        f"{result['peak'] / 2**20:,.0f} MB peak ({result['baseline'] / 2**20:,.0f} MB before reading), "
        f"{result['seconds']:.1f} s, {images} accepted, {skipped} skipped"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="the commit to compare with (default: main)")
    parser.add_argument("--limit-gb", type=float, default=4.0, help="stop a process whose RSS passes this")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("zips", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    limit = int(args.limit_gb * 2**30)
    if args.child:
        child(args.zips, limit)
        return 0
    from bench.before_after import checkout

    with tempfile.TemporaryDirectory(prefix="upload-bench-") as folder:
        colours = [(200, 80, 40), (40, 120, 200), (90, 90, 90)]
        zips = [Path(folder) / f"batch-{n}.zip" for n in range(len(colours))]
        counts = [build_zip(path, colour) for path, colour in zip(zips, colours, strict=True)]
        sizes = ", ".join(f"{path.stat().st_size / 2**20:.1f} MB" for path in zips)
        print(f"ZIPs of {counts[0]} {SIDE}² PNGs each ({sizes}); {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
        with checkout(args.before) as before_tree:
            for label, files in (("one ZIP", zips[:1]), ("three at once", zips)):
                for version, tree in ((f"before ({args.before})", before_tree), ("after", None)):
                    print(f"{label:<14} {version:<16} {describe(scenario(tree, files, args.limit_gb), args.limit_gb)}")
                    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
