#!/bin/bash
# The cut base (issue 26: can a cheaper base fit `make leaderboard` into 15 minutes?). Keeps LM
# layers 0 and 2 of the shipped 4-layer tiny (the pair with the lowest loss before any training, of
# all six) and trains on 3,000 steps on the same pretraining data; then runs the default board on
# it in a scratch clone whose checkpoints/tiny is the cut model. README "The embedded default".
#   bash bench/cut_base.sh [scratch dir]      # about 27 min of pretraining (resumable), 20 min of board
set -e
S=${1:-runs/cut_base}
# Resumable: the state lives in checkpoints/tiny-cut.pretrain/; the finished model is committed.
[ -f checkpoints/tiny-cut/model.safetensors ] || .venv/bin/python -m trainers.pretrain_tiny --out checkpoints/tiny-cut \
  --init-from checkpoints/tiny --keep-layers 0,2 --steps 3000 --lr 0.001 --warmup-steps 100 \
  --curriculum-steps 0 --select-right-from 0 --eval-every 500 --threads 2
rm -rf "$S" && git clone -q . "$S"
rm -rf "$S/checkpoints/tiny" && cp -r checkpoints/tiny-cut "$S/checkpoints/tiny"
cd "$S" && /usr/bin/time -f "board: %e s wall" make leaderboard
