#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run: a lent GPU machine's time is short, so prepare the
# environment first (torch with CUDA, then `pip install -e .[test]`) and run this once.
#   bash bench/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest tests/test_cuda.py -q
python bench/grid_throughput.py --preset gpu-sd15 --rounds 2
python bench/grid_throughput.py --preset gpu-sdxl
