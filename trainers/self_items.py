"""The items R3V self-training builds from judged samples, shared with sft's `select_replay`
(trainers/replay.py): a sample judged by its task's rule, the cot / refine / select items built
from a pool of them, and select items in exactly the prompt `harness compare ... self-select` sends.
No trainer lives here, so sft and self_train can both use it.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

from trainers.data import Example

KINDS = ("qa", "cot", "refine", "select")
# What a select item's reply is: the chosen prediction's final answer (R3V's target), or the whole
# chosen prediction restated, so the answer closes a span copied from one candidate.
SELECT_TARGETS = ("answer", "rationale")
REFINE_INSTRUCTION = "Judge the correctness of the model's prediction and refine it."


def refine_prompt(question: str, prediction: str) -> str:
    """The self-refine request: the question as the task prompts it, one prediction, the instruction
    (the line format follows `harness.stats.selection.selection_prompt`)."""
    return "\n".join([question, f"Model's Prediction: {prediction}", REFINE_INSTRUCTION])


# --- samples and items -------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One sampled answer, judged by its task."""

    iteration: int
    text: str
    extracted: Any
    score: float


@dataclass(frozen=True)
class SelfItem:
    """One training item: examples[index]'s images, `prompt` as the user turn, `target` as the reply."""

    kind: str  # qa | cot | refine | select
    index: int
    prompt: str
    target: str
    target_from: int = 0  # the iteration of the sample the target comes from (0: the gold answer)
    candidates: tuple[Sample, ...] = ()  # refine: the wrong prediction; select: the candidates shown

    def record(self, examples: Sequence[Example], iteration: int) -> dict[str, Any]:
        return {"kind": self.kind, "iteration": iteration, "id": examples[self.index].item.id, "prompt": self.prompt,
                "target": self.target, "target_from": self.target_from,
                "candidates": [c.text for c in self.candidates], "correct": [c.score >= 1.0 for c in self.candidates],
                "candidates_from": [c.iteration for c in self.candidates]}


def judge(examples: Sequence[Example], samples: Sequence[Sequence[str]], iteration: int) -> tuple[list[list[Sample]], dict[str, Any]]:
    """Each output extracted and scored by its question's task, and this iteration's sample statistics."""
    judged = []
    for ex, outs in zip(examples, samples, strict=True):
        row = []
        for text in outs:
            extracted = ex.task.extract(text, ex.item)
            row.append(Sample(iteration, text, extracted, float(ex.task.score(extracted, ex.item))))
        judged.append(row)
    flat = [x for row in judged for x in row]
    stats = {"iteration": iteration, "questions": len(examples), "samples": len(flat),
             "correct_samples": sum(x.score >= 1.0 for x in flat),
             "sample_accuracy": round(sum(x.score for x in flat) / max(1, len(flat)), 4),
             "unparsed": sum(x.extracted is None for x in flat),
             "questions_with_correct": sum(any(x.score >= 1.0 for x in row) for row in judged)}
    return judged, stats


def final_answer(ex: Example, rationale: str) -> str:
    """The part of a correct rationale from its last "answer" marker on ("Answer: 130°"), when that
    part alone is still scored correct; else the whole rationale."""
    at = rationale.lower().rfind("answer")
    if at >= 0 and ex.task.score(ex.task.extract(rationale[at:], ex.item), ex.item) >= 1.0:
        return rationale[at:]
    return rationale


def candidate_range(spec: str) -> tuple[int, int]:
    """'2..10' -> (2, 10); '3' -> (3, 3); anything else -> (0, 0), which the config refuses."""
    lo, sep, hi = str(spec).partition("..")
    try:
        return (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        return 0, 0


def check_candidates(spec: str, field_name: str = "select_candidates") -> None:
    """A config's candidate range, refused with the one message both trainers give."""
    from trainers.common import require

    lo, hi = candidate_range(spec)
    require(2 <= lo <= hi <= 64, f"{field_name} must be 'LO..HI' with 2 <= LO <= HI <= 64, e.g. 2..10")


def check_select_target(value: str) -> None:
    from trainers.common import require

    require(value in SELECT_TARGETS, f"select_target must be one of {', '.join(SELECT_TARGETS)}, got {value!r}")


def build_items(examples: Sequence[Example], pool: Sequence[Sequence[Sample]], rng: random.Random,
                select_per_question: int = 2, refine: bool = True, select_candidates: str = "2..3",
                select_target: str = "answer") -> list[SelfItem]:
    """cot, refine and select items from the judged samples of every iteration so far (`pool[i]`:
    question i's samples). Rationales and refined predictions come from the newest iteration that
    has one, as R3V does; select candidates from the whole pool. A select item's target is the first
    right candidate's final answer, or with select_target="rationale" that candidate's whole text."""
    items: list[SelfItem] = []
    for index, (ex, samples) in enumerate(zip(examples, pool, strict=True)):
        good = [x for x in samples if x.score >= 1.0]
        bad = [x for x in samples if x.score <= 0.0 and x.text.strip()]
        if not good:
            continue
        best = rng.choice(_newest(good))
        items.append(SelfItem("cot", index, ex.text, best.text, best.iteration))
        if not bad:
            continue
        if refine:
            wrong, right = rng.choice(_newest(bad)), rng.choice(_newest(good))
            items.append(SelfItem("refine", index, refine_prompt(ex.text, wrong.text), right.text, right.iteration, (wrong,)))
        sets = _select_sets(good, bad, rng) if select_candidates == "2..3" else \
            [_sized_set(good, bad, rng, candidate_range(select_candidates)) for _ in range(select_per_question)]
        for shown in sets[:select_per_question]:
            rng.shuffle(shown)
            first_correct = next(x for x in shown if x.score >= 1.0)
            reply = first_correct.text if select_target == "rationale" else final_answer(ex, first_correct.text)
            items.append(SelfItem("select", index, selection_prompt(ex.text, [x.text for x in shown]),
                                  reply, first_correct.iteration, tuple(shown)))
    return items


def _newest(samples: list[Sample]) -> list[Sample]:
    last = max(x.iteration for x in samples)
    return [x for x in samples if x.iteration == last]


def selection_prompt(question: str, candidates: Sequence[str]) -> str:
    # The exact prompt `harness compare ... self-select` builds, so the skill trained here is the one it asks for.
    from harness.stats.selection import selection_prompt as build

    return build(question, candidates)


def _select_sets(good: list[Sample], bad: list[Sample], rng: random.Random) -> list[list[Sample]]:
    """R3V's candidate sets: two correct + one wrong, one correct + two wrong (each when there are
    enough samples), else one of each; in random order."""
    sets = []
    if len(good) >= 2:
        sets.append(rng.sample(good, 2) + [rng.choice(bad)])
    if len(bad) >= 2:
        sets.append([rng.choice(good)] + rng.sample(bad, 2))
    if not sets:
        sets.append([good[0], bad[0]])
    rng.shuffle(sets)
    return sets


def _sized_set(good: list[Sample], bad: list[Sample], rng: random.Random, sizes: tuple[int, int]) -> list[Sample]:
    """n candidates (n uniform in `sizes`): one right answer, the rest drawn from all the question's
    samples, without replacement while they last (a large n repeats samples, as sampling does)."""
    n = rng.randint(*sizes)
    rest = good + bad
    rng.shuffle(rest)
    shown = [rng.choice(good)] + [rest[i % len(rest)] for i in range(n - 1)]
    return shown


def item_counts(items: Sequence[SelfItem]) -> dict[str, Any]:
    kinds = Counter(it.kind for it in items)
    sizes = Counter(len(it.candidates) for it in items if it.kind == "select")
    return {**{k: kinds[k] for k in KINDS}, "total": len(items),
            "select_candidates": {str(n): sizes[n] for n in sorted(sizes)}}


def as_examples(items: Sequence[SelfItem], examples: Sequence[Example]) -> list[Example]:
    """Training examples for SFTCollator: the item's prompt and target with its question's images."""
    return [replace(examples[it.index], text=it.prompt, target=it.target) for it in items]
