#!/usr/bin/env bash
# NEVER RUN: prepared for a session that is lent a GPU (no GPU was lent while it was written).
# One go, about 8 minutes on one modern GPU: the Qwen2-VL-2B-size bench (ours vs the bare batched
# generate vs lmms-eval's wrappers, batch 1 / 8 / 32, greedy and 10 sampled outputs per item, peak
# memory), one LLaVA-1.5-7B-size run at batch 32, and the qwen2_vl processor path with
# torchvision present. Writes JSON under ${OUT:-bench/results/gpu}; the README table is filled
# from those files by hand, naming the GPU recorded in them ("gpu").
#   OUT=/somewhere bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print(torch.cuda.get_device_name(0))" | tee "$OUT/gpu.txt"
"$PY" -c "import torchvision, transformers; print('torchvision', torchvision.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$OUT/gpu.txt" || echo "torchvision missing: bring a wheel (under 64 MiB)" | tee -a "$OUT/gpu.txt"
BUILD="$OUT/models"
for bs in 1 8 32; do
  # lmms once, at 32 (qwen2_vl batches; llava_hf would run 1); the per-item loop once, at 1.
  skip="sampled_copied"; [ "$bs" = 32 ] || skip="$skip,lmms"; [ "$bs" = 1 ] || skip="$skip,naive"
  "$PY" bench/throughput.py --config qwen2-vl-2b --build-dir "$BUILD" --device cuda --dtype bfloat16 \
    --task geoqa --limit 64 --batch-size "$bs" --samples 10 --max-new-tokens 48 --skip "$skip" \
    --out "$OUT/qwen2-vl-2b_bs$bs.json"
done
"$PY" bench/throughput.py --config llava-1.5-7b --build-dir "$BUILD" --device cuda --dtype bfloat16 \
  --task geoqa --limit 64 --batch-size 32 --samples 10 --max-new-tokens 48 --skip sampled_copied,naive \
  --out "$OUT/llava-1.5-7b_bs32.json"
# The processor path for qwen2_vl with torchvision installed (the CPU venv has none).
"$PY" -m pytest -q -x -n 0 tests/test_backend.py -k qwen 2>&1 | tail -3 | tee "$OUT/qwen_processor_tests.txt"
ls -l "$OUT"
