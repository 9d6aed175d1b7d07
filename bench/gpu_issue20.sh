#!/usr/bin/env bash
# Issue 20's GPU measurements, in one run: queue throughput one at a time vs batched (K = 4) in float16 with the tiny
# SD at 512² and the tiny SDXL at 1024², each plain, with STUDIO_COMPILE=1 and with an attention backend; and VAE
# decodes whole vs tiled up to 4096 px with Stable Diffusion's VAE architecture. Offline (tiny models built in code).
#
#   OUT=/tmp/figures bash bench/gpu_issue20.sh            # writes one .txt per measurement to $OUT, plus machine.txt
#   ROUNDS=3 STEPS=20 ATTENTION=_native_flash bash bench/gpu_issue20.sh
#
# A measurement that fails is recorded (its .txt ends with the error) and the script goes on to the next.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-20}
ATTENTION=${ATTENTION:-_native_flash}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"

{
    date -u
    uptime
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    python -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"
    git rev-parse HEAD 2>/dev/null
} >"$OUT/machine.txt" 2>&1

measure() {  # measure NAME COMMAND…: its output (and load before and after) in $OUT/NAME.txt
    local name=$1
    shift
    echo "== $name: $*"
    { uptime; "$@"; echo "exit $?"; uptime; } >"$OUT/$name.txt" 2>&1
    tail -n 6 "$OUT/$name.txt"
}

throughput=(python bench/throughput.py --device "$DEVICE" --dtype float16 --steps "$STEPS" --rounds "$ROUNDS")
for model in "preview 512" "preview-sdxl 1024"; do
    set -- $model
    measure "throughput-$1-$2" "${throughput[@]}" --model "$1" --size "$2"
    measure "throughput-$1-$2-compile" "${throughput[@]}" --model "$1" --size "$2" --compile
    measure "throughput-$1-$2-attention-$ATTENTION" "${throughput[@]}" --model "$1" --size "$2" --attention "$ATTENTION"
done
measure "vae-tiling-sd" python bench/vae_tiling.py --device "$DEVICE" --vae sd --sizes 1024 2048 4096
echo "figures in $OUT"
