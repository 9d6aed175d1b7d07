"""VAE decode, whole vs tiled (pipelines.denoise.vae_tiling): peak memory and time per output size.

Run from the repository root:

    python bench/vae_tiling.py                                   # tiny preview VAE on the CPU, 1024 and 2048 px
    python bench/vae_tiling.py --sizes 1024 2048 4096 --tiled-only 4096
    python bench/vae_tiling.py --device cuda --vae sd --sizes 2048 4096   # SD's VAE in float16 (bench/gpu_issue20.sh)

Each (size, mode) runs in a fresh process, so peaks do not mix: it builds the VAE (`preview`: the studio's tiny
offline VAE, 32 channels; `sd`: Stable Diffusion 1.x's VAE architecture, 128–512 channels, random weights — memory and
time do not depend on the weights), decodes one random latent of size/8 per side, and reports the decode's time and
peak memory above what was in use before it: on a CPU the process's peak resident set (ru_maxrss) growth, on CUDA
the peak allocated by torch. Tiled: diffusers' AutoencoderKL tiling as the studio switches it on above
VAE_TILING_PIXELS (tiles of the VAE's sample_size, overlapping by a quarter). Prints the load average (`uptime`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Stable Diffusion 1.x's VAE (runwayml/stable-diffusion-v1-5, vae/config.json)
SD_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="output sides in px")
    parser.add_argument("--tiled-only", type=int, nargs="*", default=[], help="sizes measured tiled only")
    parser.add_argument("--vae", choices=("preview", "sd"), default="preview")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(size % 8 for size in args.sizes):
        parser.error("sizes are multiples of 8 px")
    return args


def build_vae(kind: str, device: str):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    if kind == "sd":
        vae = AutoencoderKL(**SD_VAE)
    else:
        import tempfile

        from pipelines.registry import ensure_preview_model

        folder = ensure_preview_model(Path(tempfile.mkdtemp(prefix="vae-bench-")))
        vae = AutoencoderKL.from_pretrained(folder / "vae")
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return vae.eval().to(device=device, dtype=dtype)


def child(args: argparse.Namespace) -> int:
    """One decode in this process; prints its figures as JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    mode, size = args.child[0], int(args.child[1])
    device = torch.device(args.device)
    vae = build_vae(args.vae, args.device)
    if mode == "tiled":
        vae.enable_tiling()
    side = size // 8
    coarse = torch.randn(
        1, vae.config.latent_channels, max(1, side // 8), max(1, side // 8), generator=torch.Generator().manual_seed(1)
    )
    latents = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear").to(device, vae.dtype)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    with torch.no_grad():
        image = vae.decode(latents).sample
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert image.shape[-2:] == (size, size), image.shape
    print(json.dumps({"mode": mode, "size": size, "seconds": seconds, "peak_bytes": peak}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    if args.child:
        return child(args)
    load_before = os.getloadavg()
    common = ["--vae", args.vae, "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    rows = []
    for size in args.sizes:
        for mode in ("tiled",) if size in args.tiled_only else ("whole", "tiled"):
            out = subprocess.run(
                [sys.executable, __file__, *common, "--child", mode, str(size)],
                capture_output=True,
                text=True,
                cwd=REPO_ROOT,
                check=False,
            )
            if out.returncode != 0:
                print(f"{size} px {mode}: failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{size:5d} px {mode:>5}: {row['seconds']:7.2f} s, peak {row['peak_bytes'] / 2**20:9.1f} MiB")
    where = "torch's peak allocated" if args.device.startswith("cuda") else "resident set growth"
    print(f"VAE {args.vae} on {args.device}; peak = {where} during the decode")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
