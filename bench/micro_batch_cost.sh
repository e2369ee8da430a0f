#!/bin/bash
# 24 steps of the board's sft recipe without and with micro_batches=2, two builds at once at one thread
# each (as `make leaderboard --jobs 2` runs them); prints each run's training time. Output under $1.
#   bash bench/micro_batch_cost.sh [scratch dir]
S=${1:-runs/micro_batch_cost}; H=.venv/bin/harness
mkdir -p "$S"
for mb in 1 2; do
  ( rm -rf "$S/mb$mb"; OMP_NUM_THREADS=1 $H train sft --base tiny --task geoqa --out "$S/mb$mb" epochs=4 batch_size=16 \
      learning_rate=2.0e-3 lora_r=64 lora_alpha=128 lora_dropout=0.05 init_seed=0 replay=0.5 select_replay=1.0 \
      max_steps=24 micro_batches=$mb 2>&1 | tr '\r' '\n' | grep -E "sft geoqa.*done in" | sed "s/^/micro_batches=$mb: /" ) &
done
wait
