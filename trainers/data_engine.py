"""`data_engine`: MLLM-DataEngine rounds (Zhao et al. 2023, "MLLM-DataEngine: An Iterative Refinement
Approach for MLLM"): evaluate -> per-type error -> targeted data -> train, repeated.

    harness train data_engine --base tiny --task geoqa --out ckpts/data_engine [rounds=2 items_per_round=160]

Round r (1..R):
1. Evaluate the current model (greedy, the task's prompt, extraction and scorer) on a fixed
   held-out pool with `eval_per_type` items of every question type; error(type) = wrong / n.
   Never the test split the leaderboard scores: the pool is freshly generated (source=generate)
   or held out of the train split (source=train).
2. Weights: error(type) + smoothing, normalised (all zero: uniform); `allocate` turns them into
   exact item counts (largest remainder). They go to weight.json.
3. Draw that many items per type: source=generate makes new ones with the bundled generator
   (tasks/synth, `types=[type]`, seeded by (seed, round, type), into a temp dir), so no item is
   seen twice; source=train draws without replacement from the rest of the train split.
4. LoRA SFT on them, continuing the previous round's adapter (round 1 starts a fresh LoRA on the
   base). Continuing, not retraining from the base, because the next round's weights are measured
   on the model just trained, as in the original loop; a fresh adapter per round would forget
   what the error rates were about. Each round restarts the learning-rate schedule.
After the last round the pool is evaluated once more, so the manifest holds per-type error
before (round 0 = the base) and after every round. The final adapter is `out`; earlier rounds'
adapters are kept under `out/rounds/round<r>`.
"""
from __future__ import annotations

import importlib
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.errors import HarnessError
from trainers.common import TrainConfig, require
from trainers.data import TARGETS, Example, apportion

# Tasks whose bundled generator makes items of a chosen question type (item.category = its type).
SOURCES = ("generate", "train")
# Generator seeds far from the bundled splits' (1, 2) and tiny's pretraining pool (1002 + seed).
EVAL_SEED, ROUND_SEED = 80_000_000, 70_000_000


@dataclass
class DataEngineConfig(TrainConfig):
    """Data-engine rounds (plus the shared TrainConfig fields of each round's LoRA SFT)."""

    rounds: int = field(default=2, metadata={"help": "R: evaluate -> weight -> draw -> train rounds"})
    items_per_round: int = field(default=160, metadata={"help": "training items drawn per round, split over types by error rate"})
    eval_per_type: int = field(default=30, metadata={"help": "held-out items per question type the error rates are measured on"})
    source: str = field(default="generate", metadata={"help": "'generate': new items from the task's bundled generator; "
                                                               "'train': held out of / drawn from the task's train split"})
    smoothing: float = field(default=0.0, metadata={"help": "added to every type's error rate before normalising (0: purely proportional)"})
    target: str = field(default="cot", metadata={"help": "reply to learn: 'cot' (task target_text) or 'answer' (its 'Answer: ...' part)"})
    eval_batch_size: int = field(default=32, metadata={"help": "prompts per generation call when measuring error"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "generation budget when measuring error (None: the task's own)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rounds >= 1, "rounds must be >= 1")
        require(self.items_per_round >= 1, "items_per_round must be >= 1")
        require(self.eval_per_type >= 1, "eval_per_type must be >= 1")
        require(self.source in SOURCES, f"source must be one of {', '.join(SOURCES)}")
        require(self.smoothing >= 0, "smoothing must be >= 0")
        require(self.target in TARGETS, f"target must be one of {', '.join(TARGETS)}")
        require(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        require(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens must be >= 1 or null")
        require(self.limit is None or self.source == "train", "limit applies to source=train only (generated items are sized by items_per_round)")


# --- sampling proportions (pure) -------------------------------------------------------------------
def sampling_weights(error_rates: Mapping[str, float], smoothing: float = 0.0) -> dict[str, float]:
    """Normalised (error + smoothing) per type; uniform when every rate (and smoothing) is 0."""
    if not error_rates:
        raise HarnessError("data_engine: no question types to weight")
    for name, rate in error_rates.items():
        if not 0.0 <= rate <= 1.0:
            raise HarnessError(f"data_engine: error rate of {name!r} is {rate}, not in [0, 1]")
    if smoothing < 0:
        raise HarnessError("data_engine: smoothing must be >= 0")
    raw = {t: r + smoothing for t, r in error_rates.items()}
    total = sum(raw.values())
    if total == 0:
        return {t: 1.0 / len(raw) for t in raw}
    return {t: v / total for t, v in raw.items()}


def allocate(n: int, error_rates: Mapping[str, float], smoothing: float = 0.0) -> dict[str, int]:
    """Exactly `n` items split over the types in proportion to `sampling_weights` (Hamilton's
    largest remainder: floors first, then one more each to the largest fractional parts; ties go
    to the type listed first)."""
    if n < 0:
        raise HarnessError(f"data_engine: cannot allocate {n} items")
    return apportion(n, sampling_weights(error_rates, smoothing))


def draw(pool: dict[str, list[Any]], counts: Mapping[str, int], rng: random.Random) -> tuple[list[Any], dict[str, int]]:
    """Take counts[type] items of each type out of `pool` (without replacement, a seeded random
    choice); a type with too few left gives what it has. Returns the items and the shortfall."""
    taken, short = [], {}
    for kind, k in counts.items():
        left = pool.get(kind, [])
        picked = sorted(rng.sample(range(len(left)), min(k, len(left))), reverse=True)
        taken += [left.pop(i) for i in picked][::-1]
        if k > len(picked):
            short[kind] = k - len(picked)
    return taken, short


def hold_out(examples: Sequence[Example], per_type: int, seed: int) -> tuple[list[Example], dict[str, list[Example]]]:
    """source=train: `per_type` questions of each category for the error pool (a seeded shuffle); the
    rest is the pool the rounds draw from. A question's copies (item.cluster, e.g. MMBench's
    circular rotations) stay on one side, so no held-out question is trained on."""
    by_type: dict[str, dict[str, list[Example]]] = {}
    for e in examples:
        by_type.setdefault(e.item.category, {}).setdefault(e.item.cluster, []).append(e)
    held: list[Example] = []
    pool: dict[str, list[Example]] = {}
    rng = random.Random(seed)
    for kind in sorted(by_type):
        groups = list(by_type[kind].values())
        rng.shuffle(groups)
        if len(groups) <= per_type:
            raise HarnessError(f"data_engine: type {kind!r} has {len(groups)} train questions, too few to hold out "
                               f"eval_per_type={per_type} and still train; lower eval_per_type")
        held += [e for g in groups[:per_type] for e in g]
        pool[kind] = [e for g in groups[per_type:] for e in g]
    return held, pool


# --- items -----------------------------------------------------------------------------------------
def generator(task_name: str):
    """The task's own generator (Task.synth) when the task allows data_engine to use it."""
    from harness.core.task import task_class, task_classes

    cls = task_class(task_name)
    if not (cls.data_engine and cls.synth):
        ready = [name for name, c in task_classes().items() if c.data_engine and c.synth]
        raise HarnessError(f"data_engine source=generate has no generator for {task_name!r}; use one of "
                           f"{', '.join(ready)}, or source=train")
    return importlib.import_module(cls.synth)


def generate_examples(task, counts: Mapping[str, int], folder: Path, seeds: Mapping[str, int], target: str) -> list[Example]:
    """New items of each type (counts[type] of them, seeds[type]) written under `folder`, loaded as examples."""
    from trainers.data import load_examples

    gen = generator(task.name)
    out: list[Example] = []
    for k, (kind, n) in enumerate(counts.items()):
        if n == 0:
            continue
        sub = folder / f"type{k}"
        gen.build(sub, "train", n, seeds[kind], types=[kind])
        out += load_examples(task, sub, None, target, split="train")
    return out


def type_errors(backend, examples: Sequence[Example], gen, batch_size: int,
                advance=lambda k=1: None) -> dict[str, dict[str, Any]]:
    """Greedy error rate per category: {type: {n, wrong, error, ci_low, ci_high}} (Wilson 95% CI)."""
    from harness.stats.ci import score_ci

    wrong: dict[str, list[float]] = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        outs = backend.generate_images([e.text for e in chunk], [e.images for e in chunk], gen)
        for e, o in zip(chunk, outs):
            ok = e.task.score(e.task.extract(o[0], e.item), e.item) >= 1.0
            wrong.setdefault(e.item.category, []).append(0.0 if ok else 1.0)
        advance(len(chunk))
    table = {}
    for kind in sorted(wrong):
        ci = score_ci(wrong[kind], method="wilson")
        table[kind] = {"n": len(wrong[kind]), "wrong": int(sum(wrong[kind])), "error": round(ci.estimate / 100, 4),
                       "ci_low": round(ci.low / 100, 4), "ci_high": round(ci.high / 100, 4)}
    return table


# --- the treatment ---------------------------------------------------------------------------------
def run(cfg: DataEngineConfig, base: str, tasks: str, out: Path, data_dir: str | Path | None = None,
        overwrite: bool = False, progress: bool = True, device: str | None = None,
        sources: Sequence[Any] = ()) -> dict[str, Any]:
    """R data-engine rounds on one task with question types; writes `out` (adapter, weight.json, manifest).
    Data files `sources` (--data) join every round's SFT as they are."""
    from dataclasses import replace

    from harness.core.parallel import computed_on_main
    from harness.core.store import atomic_write_json
    from harness.core.task import get_task, resolve_data_dir
    from harness.core.types import GenConfig
    from trainers.common import (load_base, quiet_libraries, save_adapter, sampling_progress, staged_output,
        train_metrics, write_manifest)
    from trainers.data import examples_hash, load_data_files, load_examples, task_names
    from trainers.sft import fit_lora_sft

    quiet_libraries()
    names = task_names(tasks)
    if len(names) != 1:
        raise HarnessError(f"data_engine works on one task with question types, got --task {tasks}; pick one, e.g. geoqa")
    from trainers.replay import replay_for

    extra, records = load_data_files(sources, cfg.limit) if sources else ([], [])
    replayed: dict = {"task": names[0]}
    extra += replay_for(replayed, cfg.items_per_round, cfg, data_dir)  # joins every round's SFT
    task = get_task(names[0])
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work_dir, staged_output(Path(out), overwrite) as stage:
        work = Path(work_dir)
        pool: dict[str, list[Example]] = {}
        if cfg.source == "generate":
            types = list(generator(task.name).TYPES)
            generator(task.name).build(work / "eval", "train", cfg.eval_per_type * len(types), EVAL_SEED + 1000 * cfg.seed)
            held = load_examples(task, work / "eval", None, cfg.target, split="train")
        else:
            root = resolve_data_dir(data_dir)
            held, pool = hold_out(load_examples(task, root, cfg.limit, cfg.target, split="train"), cfg.eval_per_type, cfg.seed)
            types = list(pool)
        backend, base_name = load_base(base, cfg.qlora, device, start_from_adapter="data_engine")
        gen = GenConfig(max_new_tokens=cfg.max_new_tokens or task.max_new_tokens, seed=cfg.seed)

        def measure(label: str) -> dict[str, dict[str, Any]]:
            backend.model.eval()

            def errors():
                with sampling_progress(progress, label, len(held)) as advance:
                    return type_errors(backend, held, gen, cfg.eval_batch_size, advance)

            return computed_on_main(errors)  # the next round's allocation is rank 0's, on every rank

        history = [measure("data_engine: error before round 1")]
        rounds, trained, model, trainer = [], [], backend.model, None
        rng = random.Random(cfg.seed)
        for r in range(1, cfg.rounds + 1):
            rates = {t: history[-1].get(t, {}).get("error", 0.0) for t in types}
            counts = allocate(cfg.items_per_round, rates, cfg.smoothing)
            seeds = {t: ROUND_SEED + 1000 * cfg.seed + 10 * r + k for k, t in enumerate(types)}
            if cfg.source == "generate":
                examples, short = generate_examples(task, counts, work / f"round{r}", seeds, cfg.target), {}
            else:
                examples, short = draw(pool, counts, rng)
            if not examples:
                raise HarnessError(f"data_engine round {r}: the train pool is used up; lower items_per_round or rounds")
            trainer = fit_lora_sft(backend, model, examples + extra, replace(cfg, seed=cfg.seed + r - 1), progress,
                                   f"data_engine round {r}/{cfg.rounds}",
                                   new_adapter=r == 1)  # later rounds continue this adapter
            model = trainer.model
            if r < cfg.rounds:
                save_adapter(model, stage / "rounds" / f"round{r}", base_name)
            history.append(measure(f"data_engine: error after round {r}"))
            trained += examples
            m = train_metrics(trainer)
            rounds.append({"round": r, "error_rate": rates, "weight": sampling_weights(rates, cfg.smoothing),
                           "counts": counts, "shortfall": short, "seeds": seeds if cfg.source == "generate" else None,
                           "n": len(examples), "steps": m["steps"], "first_loss": m["first_loss"],
                           "last_loss": m["last_loss"], "train_seconds": m["train_seconds"]})
        save_adapter(model, stage, base_name)
        atomic_write_json(stage / "weight.json", {
            "task": task.name, "types": types, "source": cfg.source, "smoothing": cfg.smoothing,
            "rounds": [{k: rd[k] for k in ("round", "error_rate", "weight", "counts")} for rd in rounds],
        })
        overall = [round(sum(v["wrong"] for v in h.values()) / max(1, sum(v["n"] for v in h.values())), 4) for h in history]
        metrics = {
            "steps": sum(rd["steps"] for rd in rounds), "first_loss": rounds[0]["first_loss"],
            "last_loss": rounds[-1]["last_loss"],
            "per_type_error": {t: [h.get(t, {}).get("error") for h in history] for t in types},
            "overall_error": overall, "error_tables": history, "rounds": rounds,
            "wall_seconds": round(time.time() - t0, 1),
        }
        data = {"task": task.name, "source": cfg.source, "split": "generated" if cfg.source == "generate" else "train",
                "eval_items": len(held), "eval_hash": examples_hash(held), "n": len(trained), "hash": examples_hash(trained)}
        if records:
            data["sources"] = records
        if "replay" in replayed:
            data["replay"] = replayed["replay"]
        return write_manifest(stage, "data_engine", cfg, base=base_name, base_hash=backend.content_hash, data=data,
                              metrics=metrics, start_adapter=getattr(backend, "start_adapter", None))
