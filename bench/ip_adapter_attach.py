"""Cost of a reference image per job: attaching the IP-Adapter and encoding the reference before the run, detaching
after it (what the studio does for every job with a reference), on the tiny SD 1.x preview model, side by side.

Run from the repository root:

    python bench/ip_adapter_attach.py                    # 256², 8 steps, strength 0.75, 7 rounds
    python bench/ip_adapter_attach.py --size 512 --rounds 11 --threads 2

Builds the tiny preview model and its tiny IP-Adapter in a temporary folder (nothing downloaded, nothing under data/
touched) and warms both up, then per round times, in rotating order:

  base        pipelines.img2img.run_img2img without a reference
  reference   the same with a reference image at scale 0.6 (attach, encode, run, detach)
  attach      pipelines.adapters.applied_ip_adapter around no run (attach + detach alone)

Reported: medians, the ratio reference/base, whether a base run after the reference runs gives the first base run's
pixels exactly, and the machine's load (`uptime`) before and after. The tiny model's UNet is a few MB, so the
attach cost is a larger share here than on a real model (a real SD 1.5 UNet step is ~100× the tiny one's).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds to time (default 7)")
    parser.add_argument("--size", type=int, default=256, help="source side in px (default 256)")
    parser.add_argument("--steps", type=int, default=8, help="schedule length (default 8)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from PIL import Image

    from pipelines.adapters import applied_ip_adapter
    from pipelines.cache import get_base_pipeline, request_pipeline
    from pipelines.families import get_family
    from pipelines.img2img import Img2ImgRequest, run_img2img
    from pipelines.ip_adapters import (
        PREVIEW_ENCODER,
        PREVIEW_WEIGHTS,
        ImagePrompt,
        IpAdapterRef,
        adapter_files,
        ensure_preview_ip_adapter,
    )
    from pipelines.loras import file_sha256
    from pipelines.params import Img2ImgParams, Task
    from pipelines.registry import ensure_preview_model, resolve_model

    with tempfile.TemporaryDirectory() as folder:
        # 1. The tiny model and IP-Adapter, from files as a user's would be
        models = Path(folder)
        ensure_preview_model(models)
        ref = resolve_model("preview", models_dir=models)
        weights, encoder = adapter_files(
            str(ensure_preview_ip_adapter(models, "sd15")), PREVIEW_WEIGHTS, PREVIEW_ENCODER, name="bench"
        )
        adapter = IpAdapterRef(
            "bench",
            str(weights),
            str(encoder),
            "sd15",
            file_sha256(weights),
            file_sha256(encoder / "model.safetensors"),
            0.6,
        )
        rng = np.random.default_rng(0)
        source = Image.fromarray((rng.random((args.size, args.size, 3)) * 255).astype("uint8"))
        reference = Image.fromarray((rng.random((300, 256, 3)) * 255).astype("uint8"))
        params = Img2ImgParams(prompt="a red sneaker", strength=0.75, steps=args.steps, guidance=7.5, seed=1)

        def run(prompt: ImagePrompt | None) -> np.ndarray:
            request = Img2ImgRequest(source, params, max_side=args.size, image_prompt=prompt)
            return np.asarray(run_img2img(ref, request).image)

        def attach() -> None:
            pipe = request_pipeline(get_base_pipeline(ref), get_family("sd15"), Task.img2img)
            with applied_ip_adapter(pipe, adapter):
                pass

        cases = {"base": lambda: run(None), "reference": lambda: run(ImagePrompt(adapter, reference)), "attach": attach}
        first_base = run(None)
        for case in cases.values():  # warm-up: weights read, encoder loaded, kernels chosen
            case()

        # 2. Time them in rotating order
        times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for round_index in range(args.rounds):
            for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                started = time.perf_counter()
                cases[name]()
                times[name].append(time.perf_counter() - started)

        # 3. Report
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"tiny SD 1.x, {args.size}², {args.steps} steps at strength 0.75, {args.rounds} rounds, medians:")
        for name, seconds in medians.items():
            print(f"  {name:10s} {seconds * 1000:9.1f} ms")
        print(f"  reference / base: {medians['reference'] / medians['base']:.2f}×")
        print("  base pixels after the reference runs identical:", np.array_equal(run(None), first_base))
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
