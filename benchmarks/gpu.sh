#!/usr/bin/env bash
# The GPU check, on one CUDA machine, in under 5 minutes: the CUDA-marked tests, our encoder against timm's ViT and
# Eva (bf16, eager), then the tokenizer's VTP step at VTP-B 256 px in bf16 and the DiT-B/1 step, each printing MFU
# against the device's dense bf16 datasheet peak (vtp.train.accounting) beside the same-process matmul.
# Record what it prints in the issue it measures.
#
#   bash benchmarks/gpu.sh            # after `make install`; PYTHON=... to use another interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 VTP_NO_PROGRESS=1 TORCH_HOME=${TORCH_HOME:-$PWD/.weights/torch}

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

echo "== CUDA tests"
timeout 180 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests

echo "== encoder fwd+bwd+AdamW vs timm's ViT and Eva, bf16, eager (the CPU shapes, 8x their batch)"
timeout 90 "$PY" benchmarks/bench_encoder.py --device cuda --batch-mult 8 --repeats 5 --no-compile

echo "== tokenizer step: VTP-B (vtp-b-d64) at 256 px, bf16 autocast, batch 128 (CLIP:SSL:rec 8:2:1)"
timeout 240 "$PY" benchmarks/bench_train.py --repeats 3 --shape vtp-b-256 --set train.batch_size=128 \
  --set train.precision=bf16 --set loss.lpips_net=alex --no-compile

echo "== DiT-B/1 step and sampling, bf16"
timeout 120 "$PY" benchmarks/bench_dit.py --device cuda --dtype bf16 --repeats 3
