#!/bin/bash
# The experiments behind the README's "second stage" paragraphs (issue 26), on the held-out set only
# (`make heldout` first; never a test split; `tiny` is the second stage, `checkpoints/tiny-stage1` the first). Scratch output goes under $1
# (default runs/stage2); each checkpoint is built only when missing.
#   bash bench/stage2_causes.sh [scratch dir]
set -e
S=${1:-runs/stage2}; H=.venv/bin/harness; PY=.venv/bin/python
mkdir -p "$S"
build() { out=$S/$1; shift; [ -d "$out" ] || $H train "$@" --out "$out"; }
curve() { $H compare majority-vote self-select self-select-likelihood --ckpt "$1" --task geoqa --n 1..10 --limit 100 \
            --data-dir data/heldout --out "$S/compare_$2"; }
# The gates of both bases, with the geoqa cells (bench/results/base_gates*.json).
$PY bench/base_gates.py --ckpt checkpoints/tiny-stage1 --limit 200 --output-dir "$S/gates-stage1"
$PY bench/base_gates.py --ckpt tiny --limit 200 --output-dir "$S/gates-stage2" --json bench/results/base_gates_stage2.json
# The first, shorter try: 1,600 steps, own candidates in 60% of the selection batches.
$PY -m trainers.pretrain_tiny --out "$S/tiny-stage2-short" --init-from checkpoints/tiny-stage1 --keep-layers 0,1,2,3 --seed 1 \
  --steps 1600 --lr 5e-4 --warmup-steps 100 --curriculum-steps 0 --select-right-from 0 \
  --mix task=0.40,direct=0.04,select=0.28,pair=0.16,point=0.05,critique=0.07 --task-mix geoqa=1.5,ocrbench=4 \
  --own-questions 1200 --own-samples 6 --own-share 0.6 --eval-every 400 --save-every 200 --threads 2
$PY bench/base_gates.py --ckpt "$S/tiny-stage2-short" --limit 200 --output-dir "$S/gates-short" --json "$S/gates-short.json"
# Judging: training budget or transfer? 1,500 steps of pairwise judging alone from stage 1
# (probe agreement on the pretraining tasks in its manifest), then the critic questions' gold votes.
$PY -m trainers.pretrain_tiny --out "$S/pair_only" --init-from checkpoints/tiny-stage1 --keep-layers 0,1,2,3 --seed 1 \
  --steps 1500 --lr 5e-4 --warmup-steps 100 --curriculum-steps 0 --select-right-from 0 \
  --mix task=0,direct=0,select=0,pair=1,point=0,critique=0 --eval-every 500 --save-every 250 --threads 2
$H critic agreement --judge "$S/pair_only" --out "$S/agree_pair_only" --data-dir data/heldout
# The selection format through the board's sft and self_train recipes as they were before select_replay, on the second stage.
build sft sft --base tiny --task geoqa epochs=4 batch_size=16 learning_rate=2.0e-3 lora_r=64 \
  lora_alpha=128 lora_dropout=0.05 init_seed=0 replay=0.5
ST="--task geoqa limit=160 samples_per_question=4 iterations=3 batch_size=16 learning_rate=2.0e-4 qa=cot refine=false select_candidates=2..10 select_extra_epochs=0 replay=0.5"
build self_train self_train --base "$S/sft" $ST
build self_train_base self_train --base tiny $ST
curve "$S/sft" stage2_sft
curve "$S/self_train/iter3" stage2_self_train
curve "$S/self_train_base/iter3" stage2_self_train_from_base
# (board_self_train was the stage-1 board's build, measured before the base changed; `git checkout 5108496` rebuilds it)
# sft's select_replay (now the board's): the base's own replies as select items in the warm-up, without
# and with the reference rationale standing in where none of its replies is right; then self_train on each.
build sft_sr sft --base tiny --task geoqa epochs=4 batch_size=16 learning_rate=2.0e-3 lora_r=64 \
  lora_alpha=128 lora_dropout=0.05 init_seed=0 replay=0.5 select_replay=1.0 select_gold=false
build sft_srg sft --base tiny --task geoqa epochs=4 batch_size=16 learning_rate=2.0e-3 lora_r=64 \
  lora_alpha=128 lora_dropout=0.05 init_seed=0 replay=0.5 select_replay=1.0
build st_sr self_train --base "$S/sft_sr" $ST
build st_srg self_train --base "$S/sft_srg" $ST
curve "$S/sft_sr" sft_sr
curve "$S/sft_srg" sft_srg
curve "$S/st_sr/iter3" st_sr
curve "$S/st_srg/iter3" st_srg
# Harder select training in self-training: 4 extra passes over the select items alone each round.
build st_srg_x4 self_train --base "$S/sft_srg" ${ST/select_extra_epochs=0/select_extra_epochs=4}
curve "$S/st_srg_x4/iter3" st_srg_x4
# Copying the chosen candidate whole instead of its answer alone (select_target=rationale; a quarter of
# the answer-only replies name no choice at all): the warm-up's select curve.
build sft_srr sft --base tiny --task geoqa epochs=4 batch_size=16 learning_rate=2.0e-3 lora_r=64 \
  lora_alpha=128 lora_dropout=0.05 init_seed=0 replay=0.5 select_replay=1.0 micro_batches=2 select_target=rationale
curve "$S/sft_srr" sft_srr
# The share of selection replies that name none of the question's choices (extracted as nothing).
for c in sft_srg sft_srr; do $PY -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(sys.argv[2], f'{sum(x[\"extracted\"] is None for x in r)/len(r):.1%} of {len(r)} replies name no choice')" "$S/compare_$c/self_select/samples.jsonl" $c; done
