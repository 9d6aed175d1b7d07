"""Cost of applying a LoRA per job: switching adapters (what the studio does) vs fusing and unfusing, on the tiny
SD 1.x preview model, side by side in one process.

Run from the repository root:

    python bench/lora_switch.py                    # 256², 8 steps, strength 0.75, 9 rounds
    python bench/lora_switch.py --size 512 --rounds 15 --threads 2

Builds the tiny preview model and the tiny LoRA in a temporary folder (nothing downloaded, nothing under data/
touched), loads the LoRA once, then per round times, in rotating order:

  base        a run without LoRAs (adapters loaded but disabled: what every job without LoRAs pays)
  switch      pipelines.adapters.applied_loras: enable + set_adapters around the run, disable after it
  fuse        fuse_lora into the weights before the run, unfuse_lora after it (no LoRA layers in the forward pass)
  no-lora     a run on a pipeline that never had a LoRA loaded

and, alone, the switch and the fuse/unfuse themselves without a run (what switching costs per job). Reported:
medians and ratios, the largest pixel difference between switch and fuse, whether a base run after each way gives
the pixels of a pipeline that never had the LoRA (unfusing subtracts the LoRA again in floating point, so the
weights drift), and the machine's load (`uptime`) before and after.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--rounds", type=int, default=9, help="rounds to time (default 9)")
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

    from pipelines import cache, tiny
    from pipelines.adapters import applied_loras
    from pipelines.loras import LoraRef, file_sha256

    with tempfile.TemporaryDirectory() as folder:
        lora_file = tiny.save_tiny_lora(Path(folder) / "lora")
        lora = LoraRef("bench", str(lora_file), "sd15", file_sha256(lora_file), 0.8)
        with_lora, plain = tiny.build_tiny_sd_pipeline(), tiny.build_tiny_sd_pipeline()
        source = Image.linear_gradient("L").convert("RGB").resize((args.size, args.size))

        def run(pipe) -> np.ndarray:
            generator = torch.Generator().manual_seed(0)
            call = {"prompt": "a shoe", "image": source, "strength": 0.75, "num_inference_steps": args.steps}
            with cache.RUN_LOCK:
                image = pipe(**call, generator=generator).images[0]
            return np.asarray(image, dtype=np.int16)

        def switched() -> np.ndarray:
            with applied_loras(with_lora, (lora,)):
                return run(with_lora)

        def fuse() -> None:
            # The weight as set_adapters sets it, then folded into the base weights at scale 1.
            with_lora.enable_lora()
            with_lora.set_adapters([lora.adapter_name], adapter_weights=[lora.weight])
            with_lora.fuse_lora(adapter_names=[lora.adapter_name], lora_scale=1.0)

        def fused() -> np.ndarray:
            fuse()
            try:
                return run(with_lora)
            finally:
                with_lora.unfuse_lora()
                with_lora.disable_lora()

        def switch_only() -> None:
            with applied_loras(with_lora, (lora,)):
                pass

        def fuse_only() -> None:
            fuse()
            with_lora.unfuse_lora()
            with_lora.disable_lora()

        started = time.perf_counter()
        switched()  # loads the adapter (and warms up)
        first_load = time.perf_counter() - started
        runs = {"base": lambda: run(with_lora), "switch": switched, "fuse": fused, "no-lora": lambda: run(plain)}
        reference = run(plain)
        base_leak = int(np.abs(run(with_lora) - reference).max())  # after switching only
        difference = int(np.abs(switched() - fused()).max())
        fused_leak = int(np.abs(run(with_lora) - reference).max())  # after one fuse + unfuse
        times: dict[str, list[float]] = {name: [] for name in [*runs, "switch only", "fuse+unfuse only"]}
        order = list(runs)
        for round_index in range(args.rounds):
            for name in order[round_index % len(order) :] + order[: round_index % len(order)]:
                started = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - started)
            for name, way in (("switch only", switch_only), ("fuse+unfuse only", fuse_only)):
                started = time.perf_counter()
                way()
                times[name].append(time.perf_counter() - started)

        run_after = run(with_lora)

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"tiny SD 1.x, {args.size}², {args.steps} steps × 0.75, rank-4 LoRA on every attention projection, "
        f"{args.rounds} rounds, torch threads {torch.get_num_threads()}, cores {os.cpu_count()}"
    )
    print(f"first use (hash + load_lora_weights + run): {first_load:.3f} s")
    for name, median in medians.items():
        ratio = f"  ({median / medians['no-lora']:.2f}× no-lora)" if "only" not in name else ""
        unit = f"{median * 1000:.2f} ms" if "only" in name else f"{median:.3f} s"
        print(f"  {name:18} median {unit}{ratio}")
    print(f"largest pixel difference, switch vs fuse: {difference}/255")
    print(
        f"base run vs a pipeline that never had the LoRA: {base_leak}/255 after switching, {fused_leak}/255 after "
        f"one fuse + unfuse, {int(np.abs(run_after - reference).max())}/255 after {args.rounds + 1} more of each"
    )
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
