#!/bin/bash
# Self-select after self-training: is it the training budget? (issue 26; README "The seeds in miniature")
# From the board's sft warm-up (`make leaderboard` builds checkpoints/built/sft/seed0), one self_train
# iteration with the board's recipe (x0: 160 questions, at most 2 select items each); the same with up
# to 16 more passes over its select items alone, stopping once their mean token loss is as low as the
# reasoning (cot) items' (x16, `select_extra_epochs`). Each gets the selection curve on the held-out
# set (`make heldout` first; never a test split), and the per-kind losses after each pass are printed
# from its manifest. Output under $2 (default runs/select_budget).
#   bash bench/select_budget.sh [warm-up checkpoint] [scratch dir]
set -e
W=${1:-checkpoints/built/sft/seed0}; S=${2:-runs/select_budget}; H=.venv/bin/harness; PY=.venv/bin/python
mkdir -p "$S"
ST="--base $W --task geoqa samples_per_question=4 iterations=1 batch_size=16 learning_rate=2.0e-4 qa=cot \
refine=false select_candidates=2..10 replay=0.5 micro_batches=2"
for x in 0 16; do
  [ -d "$S/st_x$x" ] || $H train self_train $ST limit=160 select_extra_epochs=$x --out "$S/st_x$x"
  [ -d "$S/compare_x$x" ] || $H compare majority-vote self-select self-select-likelihood --ckpt "$S/st_x$x/iter1" --task geoqa \
    --n 1..10 --limit 100 --data-dir data/heldout --out "$S/compare_x$x"
  $PY - "$S/st_x$x/manifest.json" "$S/compare_x$x/self_select/samples.jsonl" <<'PY'
import json, sys
train = json.load(open(sys.argv[1]))["iterations"][0]["train"]
for k, losses in enumerate(train["item_losses"]):
    print(f"after {'training' if k == 0 else f'select pass {k}'}: " + ", ".join(f"{kind} {v:.3f}" for kind, v in sorted(losses.items())))
rows = [json.loads(line) for line in open(sys.argv[2])]
print(f"{train['select_extra_epochs']} extra passes; {sum(r['extracted'] is None for r in rows) / len(rows):.1%} of "
      f"{len(rows)} selection replies name no choice")
PY
done
