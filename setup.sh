#!/usr/bin/env bash
# One command to install Img2Img Studio's Python dependencies into the current environment.
# controlnet-aux is installed without its declared dependencies: it declares torchvision and timm,
# and the only torchvision on offer is a CUDA build that breaks CPU torch (see README).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements.txt
python -m pip install --no-deps -r requirements-nodeps.txt
if python -c "import torchvision" 2>/dev/null; then
  echo "warning: torchvision is installed; with CPU torch it breaks transformers. Run: pip uninstall -y torchvision timm" >&2
fi
