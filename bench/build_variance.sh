#!/bin/bash
# How far another draw of the board's sft recipe moves its test geoqa score (README "The seeds in
# miniature", "One build is one draw"): sft and sft_small rebuilt at seeds 1 and 2 (data order, replay
# draw and the select-replay samples; init_seed stays 0), two builds at once at one thread each, then
# scored on geoqa. Reports only: no recipe is chosen from these numbers. Output under $1 (default runs/variance).
#   bash bench/build_variance.sh [scratch dir]
set -e
S=${1:-runs/variance}; H=.venv/bin/harness
mkdir -p "$S"
C="--base tiny --task geoqa epochs=4 batch_size=16 learning_rate=2.0e-3 lora_r=64 lora_alpha=128 lora_dropout=0.05 \
init_seed=0 replay=0.5 select_replay=1.0 micro_batches=2"
for s in 1 2; do [ -d "$S/sft_seed$s" ] || OMP_NUM_THREADS=1 $H train sft $C seed=$s --out "$S/sft_seed$s" & done; wait
for s in 1 2; do [ -d "$S/sft_small_seed$s" ] || OMP_NUM_THREADS=1 $H train sft $C limit=160 seed=$s --out "$S/sft_small_seed$s" & done; wait
for c in sft_seed1 sft_seed2 sft_small_seed1 sft_small_seed2; do $H eval --ckpt "$S/$c" --tasks geoqa --output-dir "$S/runs"; done
