#!/bin/bash
# Each seed claim's figure over the seeds board's builds (README "The seeds in miniature"): after
# `make seeds-board` (and `make leaderboard`, which shares its seed-0 builds and runs), the paired
# differences over every seed of both rows (`harness diff`: mean over seeds, seed and item variance
# components), each seed's own, data_engine's per-type table, and the selection curve of every seed's
# self_train iter3 on the test split (100 items, K = 10; runs/compare_seed<k>).
#   bash bench/seeds_claims.sh [runs dir] [seeds board csv]
R=${1:-runs}; H=.venv/bin/harness
delta() {  # row_a row_b task [seed]: the "(all)" line of a - b
  a=$R/$1; b=$R/$2; [ -n "$4" ] && { a=$a/seed$4; [ -d "$b/seed$4" ] && b=$b/seed$4; }
  printf '%-44s ' "$1 - $2 ($3${4:+, seed $4})"
  COLUMNS=200 $H diff "$a" "$b" --task "$3" --first 0 | grep "(all)"
}
# Every row's primary-task score over its seeds, and every secondary cell that falls by more than its MDE.
.venv/bin/python - "${2:-leaderboards/default-seeds/leaderboard.csv}" <<'PY'
import sys
import pandas as pd
df = pd.read_csv(sys.argv[1])
for _, r in df[df.task.isin(["geoqa", "ocrbench"])].iterrows():
    seeds = f" ({r.seed_min:.1f}-{r.seed_max:.1f}, {r.seeds:.0f} seeds)" if r.seeds > 1 else ""
    delta = f"; vs tiny {r.delta:+.1f} [{r.delta_ci_low:+.1f}, {r.delta_ci_high:+.1f}] p_adj {r.p_adjusted:.3g}" if r.delta == r.delta else ""
    print(f"{r.checkpoint:24} {r.task:9} {r.score:5.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}]{seeds}{delta} ({r.endpoint})")
falls = df[(df.delta < -df.mde) & (df.endpoint != "primary")]
for _, r in falls.iterrows():
    print(f"falls beyond its MDE: {r.checkpoint} {r.task} {r.delta:+.1f} [{r.delta_ci_low:+.1f}, {r.delta_ci_high:+.1f}], MDE {r.mde:.1f}")
PY
seeds=$(ls -d "$R"/sft/seed* | sed 's/.*seed//' | sort -n)
for pair in "sft tiny geoqa" "sfte sft geoqa" "sfte sft_a128_d10 geoqa" "sfte sft_a64_d05 geoqa" "sfte sft_a64_d10 geoqa" \
            "mpo sft geoqa" "self_train_iter3 sft geoqa" "self_train_small_iter3 sft_small geoqa" "self_critique sfte geoqa" \
            "data_engine tiny geoqa" "remgcl sft_ocr ocrbench"; do
  delta $pair
  for k in $seeds; do delta $pair $k; done
done
COLUMNS=200 $H diff "$R/data_engine" "$R/tiny" --task geoqa --first 0
for k in $seeds; do
  [ -d "$R/compare_seed$k" ] || $H compare majority-vote self-select self-select-likelihood --task geoqa --n 1..10 --limit 100 \
    --ckpt checkpoints/built/self_train/seed$k/iter3 --out "$R/compare_seed$k" > /dev/null
  echo "self_train seed $k iter3, test geoqa (100 items):"; cat "$R/compare_seed$k/curve.md"
done
