"""What micro_batches saves on the board's sft recipe (README "Training treatments", `micro_batches`):
the token lengths of geoqa's training rows and of the select-replay items, and how many tokens one pass
per step of 16 pads them to (over 4 shuffled epochs), against their real count.
    .venv/bin/python bench/micro_batch_cost.py
The step timings beside it: `bash bench/micro_batch_cost.sh`."""
import numpy as np

from trainers.common import load_base
from trainers.data import load_train_data, row_lengths
from trainers.replay import select_replay, with_replay
from trainers.sft import SFTConfig

cfg = SFTConfig(select_replay=1.0, replay=0.5, batch_size=16)
examples, data = load_train_data("geoqa", None, None, "cot", ())
asked = examples
examples = with_replay(examples, data, cfg, None)
backend, _ = load_base("tiny", False, None, start_from_adapter="sft")
select = select_replay(backend, asked, data, cfg, False)
plain, sel = np.array(row_lengths(backend, examples)), np.array(row_lengths(backend, select))
print(f"rationale and replay rows: {len(plain)}, mean {plain.mean():.0f} tokens, max {plain.max()}")
print(f"select items: {len(sel)}, mean {sel.mean():.0f} tokens, max {sel.max()}")
lengths, rng, padded = np.concatenate([plain, sel]), np.random.default_rng(0), 0
for _ in range(4):
    order = rng.permutation(len(lengths))
    padded += sum(lengths[order[i:i + 16]].max() * len(order[i:i + 16]) for i in range(0, len(order), 16))
print(f"one pass per step pads to {padded / (4 * lengths.sum()):.2f}x the real tokens")
