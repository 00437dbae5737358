#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine with Python 3.11:
#   1. Debian packages for a virtual display (viewer tests run on Xvfb through pytest-xvfb);
#   2. CPU PyTorch 2.13.0 first, so nothing below pulls a newer CUDA build;
#   3. the project with its `testing` extra;
#   4. the reference tools the parity tests compare against (nnU-Net v2), installed without their
#      dependency resolution because nnunetv2 would otherwise upgrade torch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[testing]"
# dynamic-network-architectures wants timm -> torchvision, which the supported networks do not use
python -m pip install -q --no-deps "nnunetv2==2.8.1" "dynamic-network-architectures==0.4.4"
python -m pip install -q "acvl_utils==0.2.6" "batchgenerators==0.25.5" "batchgeneratorsv2==0.3.6" nibabel einops yacs \
  matplotlib seaborn
python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"torch {torch.__version__} was installed instead of 2.13.0"
PY
