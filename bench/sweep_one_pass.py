"""One-pass strength sweep vs the same cells as separate img2img calls, side by side in one process.

Run from the repository root:

    python bench/sweep_one_pass.py                      # tiny SD 1.x, 512², 20 steps, 5 strengths, 3 pairs
    python bench/sweep_one_pass.py --family sdxl        # the tiny SDXL model instead
    python bench/sweep_one_pass.py --repeats 5 --strengths 0.2,0.35,0.5,0.65,0.8 --threads 2

Builds the tiny offline preview model of the family (pipelines.families: "preview", "preview-sdxl", …) in a
temporary folder (nothing downloaded, nothing under data/ touched) and, after a warm-up of both, alternates
(ABBA) the two ways of computing the same cells:

  one-pass   `run_sweep`: one denoising loop, one batched UNet call per step, one batched decode;
  separate   one `run_img2img` per strength (what a sweep costs without the engine).

Reported: wall times (median) and their ratio; UNet forward calls (a forward hook counts them: one
pass should make max(member steps) calls, separate runs their sum) and sample-evaluations (rows the
UNet processed: the same work either way, batched differently); and the largest pixel difference
between the two ways (batching changes float rounding, nothing else).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def gradient(width: int, height: int):
    """A deterministic RGB source with structure in both directions."""
    from PIL import Image

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    return Image.fromarray(np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8), "RGB")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipelines.families import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=list(FAMILIES), default="sd15", help="model family (default sd15)")
    parser.add_argument("--repeats", type=int, default=3, help="ABBA pairs to time (default 3)")
    parser.add_argument("--size", type=int, default=512, help="source side in px (default 512)")
    parser.add_argument("--steps", type=int, default=20, help="schedule length (default 20)")
    parser.add_argument("--strengths", default="0.2,0.35,0.5,0.65,0.8", help="comma-separated strengths")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale of every cell (default 7.5)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from pipelines.cache import get_base_pipeline
    from pipelines.families import get_family
    from pipelines.img2img import Img2ImgRequest, run_img2img
    from pipelines.params import Img2ImgParams
    from pipelines.registry import ensure_preview_model, resolve_model
    from pipelines.sweep import SweepRequest, run_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    strengths = [float(s) for s in args.strengths.split(",")]
    params = Img2ImgParams(
        prompt="a red sneaker, product photo",
        negative_prompt="blurry",
        steps=args.steps,
        guidance=args.guidance,
        seed=1234,
    )
    members = tuple(replace(params, strength=s) for s in strengths)
    source = gradient(args.size, args.size)

    family = get_family(args.family)
    preview = family.preview()
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as models:
        ensure_preview_model(Path(models), preview)
        ref = resolve_model(preview, models_dir=Path(models))
        unet = get_base_pipeline(ref).unet
        calls: list[int] = []
        unet.register_forward_hook(lambda _module, inputs, _output: calls.append(inputs[0].shape[0]))

        def one_pass():
            return list(run_sweep(ref, SweepRequest(source, members, max_side=args.size)).images)

        def separate():
            return [run_img2img(ref, Img2ImgRequest(source, m, max_side=args.size)).image for m in members]

        def longest_alone():
            longest = max(members, key=lambda m: m.denoising_steps)
            return [run_img2img(ref, Img2ImgRequest(source, longest, max_side=args.size)).image]

        def timed(fn):
            calls.clear()
            started = time.perf_counter()
            images = fn()
            return time.perf_counter() - started, len(calls), sum(calls), images

        timed(one_pass), timed(separate), timed(longest_alone)  # warm-up: first-call costs out of the figures
        times = {"one-pass": [], "separate": [], "longest": []}
        counts = {}
        largest_difference = 0
        for pair in range(args.repeats):
            order = ("one-pass", "separate") if pair % 2 == 0 else ("separate", "one-pass")
            results = {}
            for name in order:
                seconds, unet_calls, rows, images = timed(one_pass if name == "one-pass" else separate)
                times[name].append(seconds)
                counts[name] = (unet_calls, rows)
                results[name] = images
            times["longest"].append(timed(longest_alone)[0])
            for a, b in zip(results["one-pass"], results["separate"], strict=True):
                largest_difference = max(largest_difference, int(np.abs(np.asarray(a, int) - np.asarray(b, int)).max()))

    denoising = [family.denoising_steps(m.steps, m.strength) for m in members]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"machine: {platform.machine()}, {device}, torch {torch.__version__}")
    print(
        f"model: {preview} (tiny {family.label}, random weights); "
        f"sweep: {args.size}×{args.size}, {args.steps} steps, strengths {strengths} → denoising steps {denoising}, "
        f"guidance {args.guidance} (classifier-free: 2 rows per cell and step)"
    )
    print(f"{'':10} {'median s':>9} {'runs':>30} {'UNet calls':>11} {'sample-evals':>13}")
    for name in ("one-pass", "separate"):
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:10} {statistics.median(times[name]):9.3f} {runs:>30} {counts[name][0]:11d} {counts[name][1]:13d}")
    ratio = statistics.median(times["one-pass"]) / statistics.median(times["separate"])
    print(f"wall ratio one-pass / separate: {ratio:.3f} (target on CPU ≤ 1.0)")
    longest = statistics.median(times["longest"])
    print(
        f"longest cell alone (strength {max(strengths)}): {longest:.3f} s; one-pass / longest alone: "
        f"{statistics.median(times['one-pass']) / longest:.2f} (on a GPU the sweep should approach 1.0)"
    )
    print(
        f"UNet calls: one-pass {counts['one-pass'][0]} = max(member steps) {max(denoising)}; "
        f"separate {counts['separate'][0]} = sum {sum(denoising)}"
    )
    print(f"largest pixel difference between the two ways: {largest_difference} / 255")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
