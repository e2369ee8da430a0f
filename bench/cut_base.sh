#!/bin/bash
# The cut base (issue 26: can a cheaper base fit `make leaderboard` into 15 minutes?). Keeps LM
# layers 0 and 2 of the shipped 4-layer tiny (the pair with the lowest loss before any training, of
# all six) and trains on 3,000 steps on the same pretraining data; then runs the default board on
# it in a scratch clone whose checkpoints/tiny is the cut model. README "The embedded default".
#   bash bench/cut_base.sh [scratch dir]   # 27 min of pretraining when not committed (resumable), 6 min held-out, 20 min board
set -e
S=${1:-runs/cut_base}
# Resumable: the state lives in checkpoints/tiny-cut.pretrain/; the finished model is committed.
[ -f checkpoints/tiny-cut/model.safetensors ] || .venv/bin/python -m trainers.pretrain_tiny --out checkpoints/tiny-cut \
  --init-from checkpoints/tiny-stage1 --keep-layers 0,2 --steps 3000 --lr 0.001 --warmup-steps 100 \
  --curriculum-steps 0 --select-right-from 0 --eval-every 500 --threads 2
# Equal compute on held-out (never a test split; `make heldout` first): the board's sft recipe on
# the cut base at 4 epochs (its cost halved) and at 8 (about the 4-layer recipe's wall time).
H=.venv/bin/harness
$H eval --ckpt checkpoints/tiny-cut --tasks geoqa --data-dir data/heldout --limit 200 --output-dir "$S-heldout/runs"
for e in 4 8; do
  [ -d "$S-heldout/sft_e$e" ] || $H train sft --base checkpoints/tiny-cut --task geoqa epochs=$e batch_size=16 learning_rate=2e-3 \
    lora_r=64 lora_alpha=128 lora_dropout=0.05 init_seed=0 replay=0.5 --out "$S-heldout/sft_e$e"
  $H eval --ckpt "$S-heldout/sft_e$e" --tasks geoqa --data-dir data/heldout --limit 200 --output-dir "$S-heldout/runs"
done
# The default board on the cut base: a scratch clone whose checkpoints/tiny is the cut model.
rm -rf "$S" && git clone -q . "$S"
rm -rf "$S/checkpoints/tiny" && cp -r checkpoints/tiny-cut "$S/checkpoints/tiny"
cd "$S" && /usr/bin/time -f "board: %e s wall" make leaderboard
