"""Replay: a share of the other tasks' train splits mixed into a treatment's SFT data, so training for
one benchmark does not make the model forget the others' answer formats (the default board measured
r-64 geoqa adapters losing 11-22 points on aokvqa and mmbench without it).

    harness train sft --base tiny --task geoqa --out X replay=0.5            # + 50% as many items from the rest
    harness train sft --base tiny --task geoqa --out X replay=0.5 replay_tasks=aokvqa_mc,mmbench
    harness train sft --base tiny --task ocrbench --out X replay=0.5 replay_tasks=geoqa:3,aokvqa_mc,aokvqa_da,mmbench

Replay items are train-split items of the other tasks (every registered task with a train split and
a training target, unless `replay_tasks` names them), in their eval prompt with their reference
reply, drawn deterministically from the run's seed and split across those tasks evenly, or in
proportion to the weights `replay_tasks` gives (`geoqa:3`: three shares; a task with long
chain-of-thought replies forgets faster than one that answers with a letter). They are never
sampled or judged. In SFT-style treatments they join the training examples as they are; in the
preference treatments (mpo, self_critique) each becomes a gold pair (`replay_pairs`): its reference
reply chosen, a reply its task's own rule scores wrong rejected.

`select_replay` (sft's select_replay=S) replays a format rather than a task: R3V select items over
the base's own sampled replies, so a warm-up keeps the selection skill its base was pretrained with.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:
    from trainers.data import Example

# Tasks whose train split holds a reference reply (the critic's judgements are a treatment's own data).
DEFAULT_REPLAY = ("geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench")


def replay_tasks(primary: Sequence[str], named: str = "") -> list[str]:
    """The replay tasks: those named (comma-separated, each optionally `name:weight`), else every
    default one not trained on."""
    return list(replay_weights(primary, named))


def replay_weights(primary: Sequence[str], named: str = "") -> dict[str, float]:
    """Each replay task's weight (1 unless `name:weight` says otherwise), in the order named."""
    from trainers.data import task_names

    if not named.strip():
        return {t: 1.0 for t in DEFAULT_REPLAY if t not in primary}
    weights: dict[str, float] = {}
    for part in [p.strip() for p in named.split(",") if p.strip()]:
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            value = -1.0
        if not (value > 0 and math.isfinite(value)):
            raise HarnessError(f"replay_tasks entry {part!r} has weight {weight!r}; write name or name:weight "
                               "with a positive number, e.g. geoqa:3")
        weights[name.strip()] = value
    chosen = task_names(",".join(weights))
    clash = sorted(set(chosen) & set(primary))
    if clash:
        raise HarnessError(f"replay_tasks names {', '.join(clash)}, which the treatment already trains on; "
                           "list only other tasks")
    return weights


def replay_examples(primary: Sequence[str], n_primary: int, share: float, data_dir: str | Path | None,
                    seed: int, named: str = "") -> tuple[list["Example"], dict[str, Any]]:
    """round(share * n_primary) replay examples, split over the replay tasks by their weights (each
    task's train items shuffled by `seed`, taken in that order, cycled if the split is smaller)."""
    from harness.core.task import get_task, resolve_data_dir
    from trainers.data import apportion, load_examples

    if share <= 0:
        return [], {}
    weights = replay_weights(primary, named)
    if not weights:
        raise HarnessError("replay > 0 but no other task to replay; set replay_tasks or replay=0")
    total = round(share * n_primary)
    root = resolve_data_dir(data_dir)
    out: list[Example] = []
    per_task: dict[str, int] = {}
    weight_sum = sum(weights.values())
    for name, want in apportion(total, {k: w / weight_sum for k, w in weights.items()}).items():
        pool = load_examples(get_task(name), root, None, "cot")
        order = list(range(len(pool)))
        random.Random(f"replay:{name}:{seed}").shuffle(order)
        chosen = [pool[order[i % len(order)]] for i in range(want)]
        out += chosen
        per_task[name] = len(chosen)
    return out, {"share": share, "n": len(out), "n_per_task": per_task}



def replay_for(data: dict[str, Any], n_primary: int, cfg: Any, data_dir: str | Path | None) -> list["Example"]:
    """cfg.replay's share (of n_primary) of replay items; recorded in `data` (the manifest's)."""
    if not getattr(cfg, "replay", 0):
        return []
    primary = [t for t in str(data.get("task", "")).split(",") if t]
    extra, info = replay_examples(primary, n_primary, cfg.replay, data_dir, cfg.seed, cfg.replay_tasks)
    data["replay"] = info
    return extra


def with_replay(examples: list["Example"], data: dict[str, Any], cfg: Any, data_dir: str | Path | None) -> list["Example"]:
    """`examples` plus their cfg.replay share of replay items."""
    return examples + replay_for(data, len(examples), cfg, data_dir)


def replay_pairs(examples: Sequence["Example"], first_index: int, seed: int) -> list[Any]:
    """One gold preference pair per replay example (examples[i] sits at first_index + i in the
    trainer's example list): the reference reply chosen, a wrong reply of the same item rejected
    (another option, another figure type's rationale, another word; checked with the task's rule).
    An item with no checked wrong reply gives no pair."""
    from trainers.data import Pair
    from trainers.replies import task_replies

    rng = random.Random(f"replay-pairs:{seed}")
    pairs = []
    for k, e in enumerate(examples):
        _, wrong = task_replies(e.task.name, e.task, e.item, e.target)
        wrong = [w for w in wrong if w.strip() and w.strip() not in e.target]
        if wrong and e.target.strip():
            pairs.append(Pair(first_index + k, e.target.strip(), rng.choice(wrong), "replay"))
    return pairs


def select_replay(backend: Any, examples: Sequence["Example"], data: dict[str, Any], cfg: Any,
                  progress: bool = False) -> list["Example"]:
    """R3V select items over the base's own replies: the base samples cfg.select_samples replies
    to a share cfg.select_replay of the task `examples` (drawn by cfg.seed); each question with a
    right and a wrong reply (by its task's rule) gives one item, the exact `harness compare`
    self-select prompt with a right reply's answer as the target; with cfg.select_gold a question
    with no right reply gets its reference rationale as one (the base's unsolved cells, the outer
    angles, would otherwise never be selected from). Recorded in `data`."""
    if not getattr(cfg, "select_replay", 0):
        return []
    from harness.core.types import GenConfig
    from trainers.sampling import draw_on_main
    from trainers.self_items import Sample, as_examples, build_items, judge

    judged_ok = [i for i, e in enumerate(examples) if e.task is not None]
    if not judged_ok:
        raise HarnessError("select_replay needs task questions to judge the base's replies; train on a task or set select_replay=0")
    rng = random.Random(f"select-replay:{cfg.seed}")
    asked = [examples[i] for i in sorted(rng.sample(judged_ok, max(1, round(cfg.select_replay * len(judged_ok)))))]
    gen = GenConfig(max_new_tokens=max(e.task.max_new_tokens for e in asked), temperature=cfg.select_temperature,
                    top_p=1.0, top_k=0, seed=cfg.seed + 20_000)
    backend.model.eval()
    samples = draw_on_main(backend, asked, cfg.select_samples, gen, 32, progress, "select replay sampling")
    judged, stats = judge(asked, samples, 0)
    gold = 0
    if getattr(cfg, "select_gold", False):  # else the cells the base never solves never show a right candidate
        for e, row in zip(asked, judged):
            if row and not any(x.score >= 1.0 for x in row):
                row.append(Sample(0, e.target, e.task.extract(e.target, e.item), 1.0))
                gold += 1
    items = [it for it in build_items(asked, judged, rng, 1, False, cfg.select_candidates, cfg.select_target) if it.kind == "select"]
    data["select_replay"] = {"share": cfg.select_replay, "questions": len(asked), "samples": stats["samples"],
                             "correct_samples": stats["correct_samples"], "unparsed": stats["unparsed"], "gold_stand_ins": gold, "items": len(items)}
    return as_examples(items, asked)
