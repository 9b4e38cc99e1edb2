#!/usr/bin/env bash
# GPU check, one prepared command for a machine with CUDA (about 5 minutes on one modern GPU):
#   1. the tests that need CUDA (tests/test_cuda.py), 2. a short AMP training of EfficientNet-B3 at 512 px,
#   3. benchmark.py for EfficientNet-B3 at 512 px, batch 32: fp32 / --amp / --channels-last / both,
#   4. with two or more GPUs, a 2-process DDP (NCCL) training through torchrun.
# Usage: bash scripts/gpu_check.sh [OUT_DIR]      (PY=python3 to use another interpreter than .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible to PyTorch"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
PYEOF

echo "== 1. CUDA tests"
"$PY" -m pytest -q tests/test_cuda.py tests/test_attention.py tests/test_model.py 2>&1 | tail -3

echo "== 2. short AMP training (EfficientNet-B3, 512 px, random init, 1 epoch of 5 x 16 images)"
"$PY" scripts/make_sample_data.py --output-dir "$OUT/data" --train-per-class 16 --test-per-class 4 \
    --image-size 256 --overwrite > /dev/null
"$PY" scripts/train.py --data-dir "$OUT/data" --save-dir "$OUT/run_amp" -m efficientnet-b3 --no-pretrained \
    --image-size 512 -b 16 -e 1 -j 4 --amp --channels-last --no-progress --sf 0 2>&1 | tail -3

echo "== 3. benchmark (EfficientNet-B3, 512 px, batch 32)"
"$PY" scripts/benchmark.py -m efficientnet-b3 --image-size 512 -b 32 --device cuda --steps 10 --warmup 3 \
    --skip loader --output "$OUT/benchmark.json" | tee "$OUT/benchmark.md"

if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== 4. DDP, 2 processes (NCCL)"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 scripts/train.py --data-dir "$OUT/data" \
      --save-dir "$OUT/run_ddp" -m efficientnet-b3 --no-pretrained --image-size 512 -b 8 -e 1 -j 2 --amp \
      --no-progress --sf 0 2>&1 | grep -E "replicas|epoch 1/1" || true
fi
echo "== done: outputs in $OUT"
