#!/bin/bash
# The experiments behind the README's "measured cause" cells on the new base (issue 26/28), on the
# held-out set only (`make heldout` first; never a test split). Scratch checkpoints go under $1
# (default runs/causes); each is built only when missing.
#   bash bench/separate_causes.sh [scratch dir]
set -e
S=${1:-runs/causes}; H=.venv/bin/harness
mkdir -p "$S"
held() { $H eval --ckpt "$1" --tasks "${2:-geoqa}" --data-dir data/heldout --limit 200 --output-dir "$S/runs"; }
build() { out=$S/$1; shift; [ -d "$out" ] || $H train "$@" --out "$out"; }
# sft's budget: can the recipe be cut? (chosen: r 64, alpha 128, dropout .05, lr 2e-3, 4 epochs)
for v in "r16_e2 lora_r=16 lora_alpha=32 epochs=2 learning_rate=2e-3" "r16_e4 lora_r=16 lora_alpha=32 epochs=4 learning_rate=2e-3" \
         "r64_e2 lora_r=64 lora_alpha=128 epochs=2 learning_rate=2e-3" "r64_e2_lr4 lora_r=64 lora_alpha=128 epochs=2 learning_rate=4e-3" \
         "r64_e3_lr3 lora_r=64 lora_alpha=128 epochs=3 learning_rate=3e-3"; do
  set -- $v; name=sft_$1; shift
  build $name sft --base tiny --task geoqa batch_size=16 lora_dropout=0.05 init_seed=0 replay=0.5 "$@"
  held $S/$name geoqa,aokvqa_mc,aokvqa_da,mmbench
done
# sfte with members trained 4x less far (lr 5e-4): is the average below its members because they travelled far?
for v in "a128_d05 128 0.05" "a128_d10 128 0.10" "a64_d05 64 0.05" "a64_d10 64 0.10"; do
  set -- $v
  build sfte_lr5e4_$1 sft --base tiny --task geoqa epochs=4 batch_size=16 learning_rate=5e-4 lora_r=64 lora_alpha=$2 lora_dropout=$3 init_seed=0 replay=0.5
  held $S/sfte_lr5e4_$1
done
build sfte_lr5e4 average --base tiny mode=deltas adapters=$S/sfte_lr5e4_a128_d05,$S/sfte_lr5e4_a128_d10,$S/sfte_lr5e4_a64_d05,$S/sfte_lr5e4_a64_d10
held $S/sfte_lr5e4
.venv/bin/python bench/adapter_agreement.py $S/sfte_lr5e4_a128_d05 $S/sfte_lr5e4_a128_d10 $S/sfte_lr5e4_a64_d05 $S/sfte_lr5e4_a64_d10
.venv/bin/python bench/adapter_agreement.py checkpoints/built/sft/seed0 checkpoints/built/sft_a128_d10/seed0 checkpoints/built/sft_a64_d05/seed0 checkpoints/built/sft_a64_d10/seed0
# sfte's fall: a shorter step or the blend? sft's update cut to the mean's length (0.82 of the members' mean
# norm, 0.67 of sft's), the mean lengthened, pairs of members that agree more or less, and the seed's
# 2:1 alphas one step lower (64 and 32); on the board's builds (make leaderboard first).
B=checkpoints/built
for x in 0.667 0.818; do [ -d $S/sft_x$x ] || .venv/bin/python bench/adapter_agreement.py $B/sft --scale $x --out $S/sft_x$x; held $S/sft_x$x; done
for x in 1.222 1.5; do [ -d $S/sfte_x$x ] || .venv/bin/python bench/adapter_agreement.py $B/sfte --scale $x --out $S/sfte_x$x; held $S/sfte_x$x; done
for d in 0.05 0.10; do
  build sft_a32_d${d#0.} sft --base tiny --task geoqa epochs=4 batch_size=16 learning_rate=2e-3 lora_r=64 lora_alpha=32 lora_dropout=$d init_seed=0 replay=0.5
  held $S/sft_a32_d${d#0.}
done
for v in "a64 $B/sft_a64_d05,$B/sft_a64_d10" "a128 $B/sft,$B/sft_a128_d10" "d05 $B/sft,$B/sft_a64_d05" "a32 $S/sft_a32_d05,$S/sft_a32_d10" \
         "a64_a32 $B/sft_a64_d05,$B/sft_a64_d10,$S/sft_a32_d05,$S/sft_a32_d10"; do
  set -- $v; build avg_$1 average --base tiny mode=deltas adapters=$2; held $S/avg_$1
done
.venv/bin/python bench/adapter_agreement.py $B/sft_a64_d05 $B/sft_a64_d10 $S/sft_a32_d05 $S/sft_a32_d10
# mpo with only its SFT term: do the preference terms or the data cost the points?
build mpo_sft_only mpo --base tiny --task geoqa samples_per_question=4 batch_size=16 epochs=2 gold_chosen=true \
  learning_rate=1e-3 lora_r=64 lora_alpha=128 replay=0.5 dpo_weight=0 bco_weight=0
held $S/mpo_sft_only
# self_critique with an SFT term on the chosen replies (RPO): is the fall the chosen likelihood falling too?
build self_critique_rpo1 self_critique --base checkpoints/built/heldout/sfte --task geoqa batch_size=8 replay=0.5 sft_weight=1.0
held $S/self_critique_rpo1
# self_train without the extra select passes (the boards' recipe now), iterations 1-3
build self_train_nosel self_train --base checkpoints/built/sft/seed0 --task geoqa limit=160 samples_per_question=4 iterations=3 \
  batch_size=16 learning_rate=2e-4 qa=cot refine=false select_candidates=2..10 select_extra_epochs=0 replay=0.5
for k in 1 2 3; do held $S/self_train_nosel/iter$k; done
# the critic judge's recipe, chosen on the held-out gold votes (data/heldout/critic: 480 votes on 120
# questions): replies with reasons (the first board recipe) or the decision alone, 1-4 epochs,
# pairwise only, the judge's own answer first, and answering the questions it judges
C="critic --base tiny --task critic batch_size=16 learning_rate=2e-3 lora_r=64 lora_alpha=128"
build critic_reasons_e1 $C epochs=1
build critic_reasons_e3 $C epochs=3
for e in 1 2 3 4; do build critic_e$e $C epochs=$e reasons=false; done
build critic_pairwise_e4 $C epochs=4 reasons=false kinds=pairwise
build critic_own_answer_e2 $C epochs=2 reasons=false answer_first=true
build critic_ans $C epochs=1 answers=true
J="--judge tiny --judge $S/critic_reasons_e1 --judge $S/critic_reasons_e3 --judge $S/critic_e1 --judge $S/critic_e2 --judge $S/critic_e3 \
   --judge $S/critic_e4 --judge $S/critic_pairwise_e4 --judge $S/critic_own_answer_e2 --judge $S/critic_ans"
$H critic agreement $J --votes data/heldout/critic/votes_gold.json --output-dir $S/runs_critic_heldout
# the chosen recipe (critic_e4 = the board's judge) and the others on the test questions' gold votes and on
# their own train pairs; per pair of answer qualities in judged.json (agreement_by_pair)
$H critic agreement $J --output-dir $S/runs
.venv/bin/python bench/critic_pointwise.py --judge tiny --judge $S/critic_reasons_e1 --judge $S/critic_e4 --judge $S/critic_ans --out $S/pointwise
.venv/bin/python bench/critic_pointwise.py --judge $S/critic_reasons_e1 --judge $S/critic_e4 --train-pairs 240 --out $S/pointwise_train
$H critic agreement $J --votes $S/pointwise_train/votes_train.json --output-dir $S/runs_train
# can the base see what the critic questions ask about (A-OKVQA's direct-answer format)?
.venv/bin/python bench/critic_perception.py --ckpt tiny --out $S/perception
.venv/bin/python bench/critic_perception.py --own-answers $S/runs/critic_own_answer_e2/critic-agreement-votes_gold/judgements.jsonl
$H eval --ckpt $S/critic_ans --tasks critic --judge tiny --output-dir $S/runs   # its own answers to the critic questions
$H critic agreement --judge tiny --judge $S/critic_reasons_e1 --judge $S/critic_e4 --answer-words 80 --output-dir $S/runs_gpt4v \
  --votes ../shared/data/real/critic/mllm_bench/pairwise_votes_gpt4v_subset.json
# the OCR rows' replay: split evenly, weighted 3:1:1:1 towards geoqa (chosen), or twice as much
$H leaderboard --spec bench/ocr_replay_heldout.yaml
# self-select: the written pick (R3V), the pick held to the candidates' answers by likelihood, and its
# control (the same answers ranked with the question alone), on the board's self_train iter3 (seed 0)
$H compare majority-vote self-select self-select-likelihood max-likelihood --ckpt checkpoints/built/self_train/seed0/iter3 \
  --task geoqa --n 1..10 --limit 100 --data-dir data/heldout --output-dir "$S/compare_heldout"
# data_engine: is the weakest type's gain the error weighting, or training on generated geoqa items at all?
# The same rounds with the allocation made uniform (smoothing 1000: 40 items of each type per round)
# against the boards' weighted recipe (smoothing 0.25), seeds 0-2; `harness diff` gives each type's
# paired difference over the three seeds (seed and item variance).
D="data_engine --base tiny --task geoqa rounds=2 items_per_round=160 eval_per_type=30 batch_size=16 epochs=4 learning_rate=2e-3 lora_r=64 lora_alpha=128 replay=0.5"
held tiny
for s in 0 1 2; do
  for v in "weighted 0.25" "uniform 1000"; do
    set -- $v
    build data_engine_$1/seed$s $D smoothing=$2 seed=$s
    $H eval --ckpt $S/data_engine_$1/seed$s --tasks geoqa --data-dir data/heldout --limit 200 --output-dir $S/runs/data_engine_$1
  done
done
for v in weighted uniform; do $H diff $S/runs/data_engine_$v $S/runs/tiny --task geoqa --data-dir data/heldout; done
$H diff $S/runs/data_engine_weighted $S/runs/data_engine_uniform --task geoqa --data-dir data/heldout
# self_train from a warm-up that leaves room, as R3V's does (its warm-up is a small annotated set): sft on the
# first 160 questions, then self-training on all 600 with its own right rationales only (qa=none: no gold
# rationale beyond the warm-up's). Is the board's flat self_train the warm-up's 600 gold rationales leaving nothing to add?
build sft_warm160 sft --base tiny --task geoqa limit=160 epochs=4 batch_size=16 learning_rate=2e-3 lora_r=64 lora_alpha=128 lora_dropout=0.05 init_seed=0 replay=0.5
held $S/sft_warm160
build self_train_warm160 self_train --base $S/sft_warm160 --task geoqa samples_per_question=4 iterations=3 batch_size=16 \
  learning_rate=2e-4 qa=none refine=false select_candidates=2..10 select_extra_epochs=0 replay=0.5
for k in 1 2 3; do
  $H eval --ckpt $S/self_train_warm160/iter$k --tasks geoqa --data-dir data/heldout --limit 200 --output-dir $S/runs/warm160
done
$H diff $S/runs/warm160/iter3 $S/runs/sft_warm160 --task geoqa --data-dir data/heldout
$H compare majority-vote self-select self-select-likelihood --ckpt $S/self_train_warm160/iter3 --task geoqa --n 1..10 \
  --limit 100 --data-dir data/heldout --output-dir "$S/compare_warm160"
# control: the same loop from the same warm-up on the warm-up's own 160 questions only (no new questions):
# is the lift the new questions' own rationales, or only more training for an under-trained warm-up?
build self_train_warm160_same self_train --base $S/sft_warm160 --task geoqa limit=160 samples_per_question=4 iterations=3 \
  batch_size=16 learning_rate=2e-4 qa=none refine=false select_candidates=2..10 select_extra_epochs=0 replay=0.5
$H eval --ckpt $S/self_train_warm160_same/iter3 --tasks geoqa --data-dir data/heldout --limit 200 --output-dir $S/runs/warm160_same
$H diff $S/runs/warm160_same/iter3 $S/runs/sft_warm160 --task geoqa --data-dir data/heldout
$H diff $S/runs/warm160/iter3 $S/runs/warm160_same/iter3 --task geoqa --data-dir data/heldout
# the same control with its steps matched to the full loop's (epochs 3.3: about 90-110 steps per iteration,
# as the full loop's one pass over 600 questions): new questions, or only more steps?
build self_train_warm160_same_steps self_train --base $S/sft_warm160 --task geoqa limit=160 samples_per_question=4 iterations=3 \
  batch_size=16 learning_rate=2e-4 qa=none refine=false select_candidates=2..10 select_extra_epochs=0 replay=0.5 epochs=3.3
$H eval --ckpt $S/self_train_warm160_same_steps/iter3 --tasks geoqa --data-dir data/heldout --limit 200 --output-dir $S/runs/warm160_same_steps
$H diff $S/runs/warm160_same_steps/iter3 $S/runs/sft_warm160 --task geoqa --data-dir data/heldout
$H diff $S/runs/warm160/iter3 $S/runs/warm160_same_steps/iter3 --task geoqa --data-dir data/heldout
# mpo on sft's own data and schedule: the gold rationale is the chosen against one wrong sample of each
# question (chosen_from=gold), 4 epochs at lr 2e-3 as sft: do the preference terms help or cost when the
# SFT term trains on what sft trains on?
MG="mpo --base tiny --task geoqa samples_per_question=4 max_pairs_per_question=1 chosen_from=gold batch_size=16 epochs=4
    learning_rate=2e-3 lora_r=64 lora_alpha=128 lora_dropout=0.05 replay=0.5"
build mpo_gold $MG
held $S/mpo_gold
held checkpoints/built/sft/seed0  # the board's sft (make leaderboard builds it)
$H diff $S/runs/mpo_gold $S/runs/sft --task geoqa --data-dir data/heldout
# ... its SFT term alone (the same pairs, dpo and bco weights 0), and its preference terms held closer to the
# reference (beta 1.0 instead of MPO's 0.1)
for v in "sft_only dpo_weight=0 bco_weight=0" "beta1 beta=1.0"; do
  set -- $v; name=mpo_gold_$1; shift
  build $name $MG "$@"
  held $S/$name
  $H diff $S/runs/$name $S/runs/mpo_gold --task geoqa --data-dir data/heldout
done
# ... the preference terms at a tenth and a quarter of MPO's weights (0.8 DPO, 0.2 BCO), and each term alone at its
# own weight: how much preference weight costs what, and which term
for v in "w10 dpo_weight=0.08 bco_weight=0.02" "w25 dpo_weight=0.2 bco_weight=0.05" "dpo_only bco_weight=0" \
         "bco_only dpo_weight=0"; do
  set -- $v; name=mpo_gold_$1; shift
  build $name $MG "$@"
  held $S/$name
  $H diff $S/runs/$name $S/runs/mpo_gold_sft_only --task geoqa --data-dir data/heldout
done
# mpo in its paper's order, after sft (the boards' recipe now: lr 2e-4, 1 epoch from the sft warm-up), the
# same with its SFT term alone (the preference terms' share of the change), and a 4x smaller step
MA="mpo --base checkpoints/built/sft/seed0 --task geoqa samples_per_question=4 gold_chosen=true batch_size=16 epochs=1 replay=0.5"
for v in "lr2e4 learning_rate=2e-4" "lr2e4_sft_only learning_rate=2e-4 dpo_weight=0 bco_weight=0" "lr5e5 learning_rate=5e-5"; do
  set -- $v; name=mpo_after_sft_$1; shift
  build $name $MA "$@"
  held $S/$name geoqa,aokvqa_mc,aokvqa_da,mmbench
  $H diff $S/runs/$name $S/runs/sft --task geoqa --data-dir data/heldout
done
$H diff $S/runs/mpo_after_sft_lr2e4 $S/runs/mpo_after_sft_lr2e4_sft_only --task geoqa --data-dir data/heldout
# where the points go: the written arithmetic inside the template, with and without the preference terms
.venv/bin/python bench/template_arithmetic.py $S/runs/tiny $S/runs/sft $S/runs/mpo_gold_sft_only $S/runs/mpo_gold $S/runs/mpo_gold_beta1
# reading (the REMGCL row): the board's OCR rows read 2-4%. Epochs, the adapter, the weights it leaves fixed, the
# base's pretraining and the budget, separated on 4,474 fresh OCR items (bench/ocr_capacity.py; no held-out word)
$H eval --ckpt tiny --tasks ocrbench --data-dir data/heldout --output-dir $S/runs_ocr
R="sft --base tiny --task ocrbench batch_size=16 learning_rate=2e-3 lora_r=64 lora_alpha=128 replay=0.5 replay_tasks=geoqa:3,aokvqa_mc,aokvqa_da,mmbench"
for e in 4 16; do build sft_ocr_e$e $R epochs=$e; done   # the board's sft_ocr, and at 4x its epochs
.venv/bin/python bench/ocr_capacity.py --write-data $S/ocr_fresh
for t in sft remgcl; do  # LoRA as the boards train it, on the fresh items: 2,002 steps of 32
  build ${t}_ocr_fresh $t --base tiny --task ocrbench --data-dir $S/ocr_fresh batch_size=32 epochs=14.3 learning_rate=2e-3 \
    lora_r=64 lora_alpha=128 replay=0
done
build sft_ocr_fresh_lr5e3 sft --base tiny --task ocrbench --data-dir $S/ocr_fresh batch_size=32 epochs=14.3 learning_rate=5e-3 \
  lora_r=64 lora_alpha=128 replay=0   # a larger LoRA step
OC="--init tiny --steps 2000"
for v in "all_2000 $OC" "all_4000 --init tiny --steps 4000" "frozen_patch_2000 $OC --freeze patch_embedding" \
         "lora_matrices_2000 $OC --freeze patch_embedding,position_embedding,class_embedding,layrnorm,layernorm,norm,embed_tokens,lm_head,bias" \
         "random_init_2000 --init fresh --steps 2000"; do
  set -- $v; name=ocr_$1; shift
  [ -d $S/$name ] || .venv/bin/python bench/ocr_capacity.py --out $S/$name "$@"
done
for c in sft_ocr_e4 sft_ocr_e16 sft_ocr_fresh sft_ocr_fresh_lr5e3 remgcl_ocr_fresh ocr_all_2000 ocr_all_4000 ocr_frozen_patch_2000 ocr_lora_matrices_2000 ocr_random_init_2000; do
  $H eval --ckpt $S/$c --tasks ocrbench --data-dir data/heldout --output-dir $S/runs_ocr
done
$H diff $S/runs_ocr/sft_ocr_e16 $S/runs_ocr/sft_ocr_e4 --task ocrbench
$H diff $S/runs_ocr/remgcl_ocr_fresh $S/runs_ocr/sft_ocr_fresh --task ocrbench
$H diff $S/runs_ocr/ocr_lora_matrices_2000 $S/runs_ocr/sft_ocr_fresh --task ocrbench
$H diff $S/runs_ocr/sft_ocr_fresh_lr5e3 $S/runs_ocr/sft_ocr_fresh --task ocrbench
for c in ocr_all_4000 ocr_frozen_patch_2000 ocr_lora_matrices_2000 ocr_random_init_2000; do $H diff $S/runs_ocr/$c $S/runs_ocr/ocr_all_2000 --task ocrbench; done
.venv/bin/python bench/ocr_capacity.py --digits $S/runs_ocr/tiny $S/runs_ocr/sft_ocr_e4 $S/runs_ocr/sft_ocr_e16 $S/runs_ocr/sft_ocr_fresh $S/runs_ocr/remgcl_ocr_fresh \
  $S/runs_ocr/ocr_all_2000 $S/runs_ocr/ocr_all_4000 $S/runs_ocr/ocr_frozen_patch_2000 $S/runs_ocr/ocr_lora_matrices_2000 $S/runs_ocr/ocr_random_init_2000
.venv/bin/python bench/ocr_capacity.py --digits $S/runs_ocr/sft_ocr_fresh $S/runs_ocr/remgcl_ocr_fresh $S/runs_ocr/sft_ocr_fresh_lr5e3
# REMGCL where the SFT baseline reads: every weight trained (full_finetune=true), the same fresh items and steps
for t in sft remgcl; do
  build ${t}_ocr_fresh_full $t --base tiny --task ocrbench --data-dir $S/ocr_fresh batch_size=32 epochs=14.3 learning_rate=1e-3 \
    weight_decay=0.01 full_finetune=true replay=0
  $H eval --ckpt $S/${t}_ocr_fresh_full --tasks ocrbench --data-dir data/heldout --output-dir $S/runs_ocr
done
$H diff $S/runs_ocr/remgcl_ocr_fresh_full $S/runs_ocr/sft_ocr_fresh_full --task ocrbench
# ... the same pair at seed 1 (one build is one draw); the README's test figures for it come from
# `harness eval --ckpt $S/<t>_ocr_fresh_full_s1 --tasks ocrbench` (the recipe is fixed: nothing is chosen on test)
for t in sft remgcl; do
  build ${t}_ocr_fresh_full_s1 $t --base tiny --task ocrbench --data-dir $S/ocr_fresh batch_size=32 epochs=14.3 learning_rate=1e-3 \
    weight_decay=0.01 full_finetune=true replay=0 seed=1
  $H eval --ckpt $S/${t}_ocr_fresh_full_s1 --tasks ocrbench --data-dir data/heldout --output-dir $S/runs_ocr_s1
done
$H diff $S/runs_ocr_s1/remgcl_ocr_fresh_full_s1 $S/runs_ocr_s1/sft_ocr_fresh_full_s1 --task ocrbench
$H diff $S/runs_ocr/sft_ocr_fresh_full $S/runs_ocr/sft_ocr_fresh --task ocrbench
.venv/bin/python bench/ocr_capacity.py --digits $S/runs_ocr/sft_ocr_fresh_full $S/runs_ocr/remgcl_ocr_fresh_full
