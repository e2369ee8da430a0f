"""What the embedded `tiny` base is pretrained on: every format the tasks, the treatments and
`harness compare` use, on fresh generator items, with declared held-out cells.

    from trainers.pretrain_data import build_pool
    pool = build_pool(workdir, scale=16, seed=0)   # {format: [Example, ...]}, plus held-out probes

Like an instruction-tuned base, tiny has seen each format before post-training, so a treatment
sharpens a skill instead of inventing a format (issue 26). The formats (`FORMATS`):
- task:     each bundled task's own prompt -> its target (GeoQA: the chain-of-thought rationale);
- direct:   GeoQA with self-training's "Answer directly" line -> "Answer: <value>";
- select:   R3V's selection prompt (`harness.stats.selection.selection_prompt`, the exact prompt
            `harness compare ... self-select` sends) with 1-10 candidates, any number of them right
            (none included) -> the gold final answer, so the reply reads the image, not the majority;
- pair:     the critic's pairwise prompt (`harness.judge.pipeline.pairwise_prompt`) -> "Answer1",
            "Answer2" or "Tie" from gold, then a one-sentence reason;
- point:    the critic's pointwise prompt -> a 0-100 score from gold (A-OKVQA: its VQA accuracy);
- critique: self_critique's judge prompt (two replies, "Give the correct reply") -> the right one.

A later stage (`sample_own`, `attach_own`) adds the base's own sampled replies as selection
candidates: `harness compare` shows a model its own samples, whose slips (broken arithmetic, values
among no choice) the generator's clean replies never have.

Held-out cells (`HELD_OUT`): in the train splits, never in pretraining, so every treatment has
something real to learn. They are declared in the manifest and the README.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

TASKS = ("geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench")
FORMATS = ("task", "direct", "select", "pair", "point", "critique")
# Share of batches per format (each batch holds one format, one task: similar lengths, little padding).
FORMAT_WEIGHTS = {"task": 0.55, "direct": 0.07, "select": 0.15, "pair": 0.10, "point": 0.07, "critique": 0.06}
# Within `task`: geometry needs the most steps to read its figures, OCR the next most.
TASK_WEIGHTS = {"geoqa": 2.0, "aokvqa_mc": 1.0, "aokvqa_da": 1.0, "mmbench": 1.0, "ocrbench": 1.5}
SELECT_TASKS = ("geoqa", "aokvqa_mc")
JUDGE_TASKS = ("geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench")
MAX_CANDIDATES = 10

# Cells the bundled train splits hold and pretraining does not (README "The embedded default").
HELD_OUT_WORDS = ("PIZZA", "MUSIC", "HOTEL", "CITY", "NEWS", "GOLD")
HELD_OUT: dict[str, str] = {
    "geoqa": "the outer angle values x in {10, 15, 75, 80} (tasks/synth/geoqa.py PRETRAIN_X_VALUES)",
    "aokvqa_mc": "question type 'position'",
    "aokvqa_da": "question type 'position'",
    "mmbench": "category 'physical_relation'",
    "ocrbench": f"the words {', '.join(HELD_OUT_WORDS)}",
    "critic": "every critic question (open-ended questions about shapes): judging is seen only on the other tasks",
}


def held_out(task: str, item: Any) -> bool:
    """Whether `item` of `task` is in a held-out cell (geoqa's are never generated for pretraining)."""
    if task in ("aokvqa_mc", "aokvqa_da"):
        return item.category == "position"
    if task == "mmbench":
        return item.category == "physical_relation"
    if task == "ocrbench":
        return any(str(a).strip().upper() in HELD_OUT_WORDS for a in item.target)
    return False


@dataclass
class Example:
    format: str
    task: str
    category: str
    text: str
    image: Any  # PIL image, opened once and shared
    target: str
    key: str = ""  # the batch bucket: format, task and (select) the candidate count


@dataclass
class Source:
    """One generated item with what every format needs from it."""

    task: Any
    item: Any
    image: Any
    prompt: str
    right: list[str]  # replies scored right
    wrong: list[str]  # replies scored wrong
    own_right: list[str] = field(default_factory=list)  # the base's own samples scored right (`attach_own`)
    own_wrong: list[str] = field(default_factory=list)  # ... and scored wrong


def parse_weights(spec: str, defaults: dict[str, float], flag: str) -> dict[str, float]:
    """"select=0.25,pair=0.2": `defaults` with those entries replaced (an unknown name is an error)."""
    from harness.errors import HarnessError

    weights = dict(defaults)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if name not in defaults or weight < 0:
            raise HarnessError(f"--{flag} {spec!r}: {part!r} is not NAME=WEIGHT with NAME one of "
                               f"{', '.join(defaults)} and WEIGHT >= 0")
        weights[name] = weight
    if not any(weights.values()):
        raise HarnessError(f"--{flag} {spec!r}: every weight is 0; give at least one a positive weight")
    return weights


def load_sources(workdir: Path, scale: float, seed: int) -> dict[str, list[Source]]:
    """Fresh generator items of every task (other seeds than the committed splits), held-out
    cells removed."""
    from harness.core.images import open_image
    from harness.core.task import get_task
    from tasks.synth import geoqa
    from tasks.synth.__main__ import build_all
    from trainers.replies import task_replies

    build_all(workdir, scale=scale, seed_offset=1000 + seed, splits=("train",),
              options={"geoqa": {"x_values": geoqa.PRETRAIN_X_VALUES}})
    images: dict[str, Any] = {}
    out: dict[str, list[Source]] = {}
    for name in TASKS:
        task = get_task(name)
        sources = []
        for it in task.load(workdir, "train"):
            if held_out(name, it):
                continue
            ref = it.images[0]
            key = ref.hex()[:64] if isinstance(ref, bytes) else str(ref)
            if key not in images:
                images[key] = open_image(ref)
            target = task.target_text(it)
            right, wrong = task_replies(name, task, it, target)
            sources.append(Source(task, it, images[key], task.prompt(it), right or [target], wrong))
        out[name] = sources
    return out


# --- the formats ------------------------------------------------------------------------------
def _task(s: Source, name: str, rng: random.Random) -> Example:
    return Example("task", name, s.item.category, s.prompt, s.image, s.task.target_text(s.item), f"task:{name}")


def _direct(s: Source, name: str, rng: random.Random) -> Example | None:
    from trainers.self_train import QA_INSTRUCTION

    if name != "geoqa":
        return None
    return Example("direct", name, s.item.category, f"{s.prompt}\n{QA_INSTRUCTION}", s.image,
                   f"Answer: {s.item.metadata['answer_value']}°", "direct:geoqa")


def _select(s: Source, name: str, rng: random.Random, n: int | None = None, needs_right: bool = False,
            own: bool = False) -> Example | None:
    """R3V's selection prompt over n candidates, the gold final answer as the target. needs_right:
    at least one candidate is right (R3V's setup): with none right the target is in no candidate,
    which teaches the model to answer past its candidates rather than pick among them. own: the
    candidates are the base's own samples (a pool it has none of falls back to the generator's)."""
    from harness.stats.selection import selection_prompt

    right, wrong = (s.own_right or s.right, s.own_wrong or s.wrong) if own else (s.right, s.wrong)
    if name not in SELECT_TASKS or not wrong:
        return None
    n = n or rng.randint(1, MAX_CANDIDATES)
    share = rng.random()  # any mix, from all wrong to all right: the image decides, not the count
    shown = [rng.choice(right) if rng.random() < share else rng.choice(wrong) for _ in range(n)]
    if needs_right and not any(c in right for c in shown):
        shown[rng.randrange(n)] = rng.choice(right)
    gold = s.right[-1] if name == "geoqa" else s.right[0]  # the final answer alone ("Answer: 145°")
    return Example("select", name, s.item.category, selection_prompt(s.prompt, shown), s.image, gold,
                   f"select:{name}:{n}")


def _pair(s: Source, name: str, rng: random.Random) -> Example | None:
    from harness.judge.pipeline import pairwise_prompt

    if not s.wrong:
        return None
    if rng.random() < 0.2:  # ties: both right (when two phrasings exist) or both wrong
        pool, tie = (s.right, "Both answers are correct.") if len(s.right) > 1 and rng.random() < 0.5 \
            else (s.wrong, "Neither answer is correct.")
        if len(pool) < 2:
            return None
        a, b = rng.sample(pool, 2)
        verdict = f"Tie. {tie}"
    else:
        good, bad = rng.choice(s.right), rng.choice(s.wrong)
        first = rng.random() < 0.5
        a, b = (good, bad) if first else (bad, good)
        win, lose = ("Answer1", "Answer2") if first else ("Answer2", "Answer1")
        verdict = f"{win}. {win} matches the image; {lose} does not."
    return Example("pair", name, s.item.category, pairwise_prompt(s.item.question, a, b), s.image, verdict,
                   f"pair:{name}")


def _point(s: Source, name: str, rng: random.Random) -> Example | None:
    from harness.judge.pipeline import pointwise_prompt

    candidates = s.right + s.wrong
    answer = rng.choice(candidates)
    score = round(100 * s.task.score(s.task.extract(answer, s.item), s.item))
    reason = "The answer matches the image." if score >= 100 else \
        "The answer is partly right." if score > 0 else "The answer does not match the image."
    return Example("point", name, s.item.category, pointwise_prompt(s.item.question, answer), s.image,
                   f"{score}. {reason}", f"point:{name}")


def _critique(s: Source, name: str, rng: random.Random) -> Example | None:
    from trainers.self_critique import JUDGE_TEMPLATE

    if not s.wrong:
        return None
    good, bad = rng.choice(s.right), rng.choice(s.wrong)
    first, second = (good, bad) if rng.random() < 0.5 else (bad, good)
    return Example("critique", name, s.item.category,
                   JUDGE_TEMPLATE.format(question=s.prompt, first=first, second=second), s.image, good,
                   f"critique:{name}")


MAKERS: dict[str, Callable[[Source, str, random.Random], Example | None]] = {
    "task": _task, "direct": _direct, "select": _select, "pair": _pair, "point": _point, "critique": _critique,
}


def draw_batch(sources: dict[str, list[Source]], rng: random.Random, size: int,
               curriculum: bool = False, select_needs_right: bool = False,
               format_weights: dict[str, float] | None = None, task_weights: dict[str, float] | None = None,
               own_share: float = 0.0) -> list[Example]:
    """One batch of one format and one task (the first steps: single-object colour questions only).

    Selection batches share one candidate count, so their prompts have about the same length; a
    share `own_share` of them shows the base's own samples (drawn from the items that have them)."""
    if curriculum:
        pool = [s for s in sources["aokvqa_mc"] if s.item.category == "color_single"]
        return [_task(rng.choice(pool), "aokvqa_mc", rng) for _ in range(size)]
    fw, tw = format_weights or FORMAT_WEIGHTS, task_weights or TASK_WEIGHTS
    fmt = rng.choices(FORMATS, [fw[f] for f in FORMATS])[0]
    names = {"task": TASKS, "direct": ("geoqa",), "select": SELECT_TASKS}.get(fmt, JUDGE_TASKS)
    name = rng.choices(names, [tw[n] for n in names])[0]
    maker, pool = MAKERS[fmt], sources[name]
    if fmt == "select":
        n = rng.randint(1, MAX_CANDIDATES)
        owned = [s for s in pool if s.own_right or s.own_wrong] if own_share else []
        own = bool(owned) and rng.random() < own_share
        pool = owned if own else pool
        maker = lambda s, name, rng: _select(s, name, rng, n, select_needs_right, own)  # noqa: E731
    batch: list[Example] = []
    while len(batch) < size:
        ex = maker(rng.choice(pool), name, rng)
        if ex is not None:
            batch.append(ex)
    return batch


# --- the base's own samples as selection candidates ------------------------------------------
def sample_own(backend: Any, rows: list[Source], k: int, seed: int, batch: int = 16,
               report: Callable[[int, int], None] | None = None) -> dict[str, list[str]]:
    """k sampled replies (temperature 1, the task's own reply budget) per item of `rows`, by item id."""
    from harness.core.types import GenConfig

    out: dict[str, list[str]] = {}
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        task = part[0].task
        gen = GenConfig(max_new_tokens=task.max_new_tokens, temperature=1.0, seed=seed + start)
        replies = backend.generate_images([s.prompt for s in part], [[s.image] for s in part], gen, n=k)
        out.update({s.item.id: r for s, r in zip(part, replies)})
        if report:
            report(min(start + batch, len(rows)), len(rows))
    return out


def attach_own(rows: list[Source], samples: dict[str, list[str]]) -> None:
    """Split each item's own samples into right and wrong by the task's rule (distinct replies only)."""
    for s in rows:
        for reply in dict.fromkeys(samples.get(s.item.id, [])):
            good = s.task.score(s.task.extract(reply, s.item), s.item) >= 1.0
            (s.own_right if good else s.own_wrong).append(reply)
