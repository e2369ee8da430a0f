"""Test-time selection from K sampled answers: exact estimators, the self-select prompt, methods.

Given K sampled outputs of one item, each estimator returns the expected score of a method that
sees n of them, averaged exactly over all C(K, n) subsets of the K (so the curve does not depend
on which n samples happen to come first):

- `majority_at_n`: plurality vote of the extracted answers. Unparsed samples do not vote but take
  a slot of the subset; a subset with no parsed answer scores 0; when t answers tie for the most
  votes each gets 1/t (the expected score of a uniform tie-break).
- `best_at_n`: the oracle ceiling, the best score among the n (pass@n for 0/1 scores, where it
  equals the unbiased estimator 1 - C(K-c, n) / C(K, n) of Chen et al. 2021).

`selection_prompt` is R3V's test-time selection prompt (Cheng et al. 2024, "Vision-Language
Models Can Self-Improve Reasoning via Reflection"): the question, one "Model's Prediction i: ..."
line per candidate, then the instruction to pick the correct one. The request asks for the final
answer only, so `read_selection` reads a reply without any "answer" marker ("70°", "(B)") as that
answer; any other reply is extracted exactly as the task extracts an output.

A method (`Method`: `name`, `needs_model`, `curve(pool, ns, ctx)`) turns a `SamplePool` into a
`MethodCurve` per n: `MajorityVote` and `PassAtN` here (exact, no model); `SelfSelect`, which asks
the model, lives in harness/self_select.py (statistics never drive a model). A new method, e.g. a
critic-scored best-of-n, is one more class with the same three members.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import combinations
from math import comb
from typing import Any, Hashable, Mapping, Protocol, Sequence

from harness.errors import HarnessError
from harness.core.task import Task
from harness.core.types import Item

SELECT_INSTRUCTION = (
    "Which prediction is correct? Give the final answer for the beginning question by selecting "
    "the correct option."
)


def selection_prompt(question: str, candidates: Sequence[str]) -> str:
    """The question (as the task prompts it), the numbered candidates, the selection request."""
    lines = [f"Model's Prediction {i}: {text}" for i, text in enumerate(candidates, 1)]
    return "\n".join([question, *lines, SELECT_INSTRUCTION])


def read_selection(task: Task, reply: str, item: Item) -> Any:
    """The task's extraction of a selection reply. The selection request asks for the final answer
    only, so a reply with no "answer" marker at all ("70°", "(B)") is read as that answer, as if it
    followed "Answer:"; a reply with the marker is extracted exactly as the task extracts any output."""
    extracted = task.extract(reply, item)
    if extracted is None and reply.strip() and "answer" not in reply.lower():
        extracted = task.extract(f"Answer: {reply.strip()}", item)
    return extracted


MAX_K = 4096  # samples per item: far beyond any test-time scaling curve, and a cap on what --n may expand to


def parse_ns(spec: str, k: int | None = None) -> tuple[int, ...]:
    """`--n`: a range "1..10", a list "1,2,4,8", a single value "4", or a mix "1..4,8".

    Every value is checked against K (`k`, else MAX_K) before a range is expanded, so a typo
    like 1..1000000000 is an error, not a billion-element set.
    """
    top = k or MAX_K
    values: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if ".." in part:
                lo_text, hi_text = part.split("..", 1)
                lo, hi = int(lo_text), int(hi_text)
                if lo > hi:
                    raise HarnessError(f"--n {spec!r}: range {part} runs backwards; write it as {hi}..{lo}")
                _check_top(spec, hi, top, k)
                values.update(range(lo, hi + 1))
            else:
                values.add(_check_top(spec, int(part), top, k))
        except ValueError:
            raise HarnessError(
                f"--n {spec!r}: {part!r} is not a number; use a range (1..10), a list (1,2,4,8) or one value"
            ) from None
    if not values or min(values) < 1:
        raise HarnessError(f"--n {spec!r}: every n must be a positive integer")
    return tuple(sorted(values))


def _check_top(spec: str, n: int, top: int, k: int | None) -> int:
    if n > top:
        what = f"--samples K={k}" if k else f"the largest supported K ({MAX_K} samples per item)"
        raise HarnessError(f"--n {spec!r}: n={n} exceeds {what}; lower --n" + ("" if k else " or set --samples"))
    return n


def _check_n(k: int, n: int) -> None:
    if not 1 <= n <= k:
        raise HarnessError(f"n={n} needs 1 <= n <= K, the number of samples ({k})")


def majority_at_n(votes: Sequence[Hashable | None], value: Mapping[Hashable, float], n: int) -> float:
    """Expected majority-vote score over all n-subsets of the K samples.

    votes: the extracted answer of each sample (None: unparsed); value: the score of each
    distinct answer (missing answers score 0). Exact combinatorics, no enumeration: see
    `_plurality_weight`.
    """
    k = len(votes)
    _check_n(k, n)
    counts = Counter(v for v in votes if v is not None)
    unparsed = k - sum(counts.values())
    total = Fraction(0)
    for answer, m in counts.items():
        score = value.get(answer, 0.0)
        if score:  # answers worth nothing add nothing; they still compete below
            others = [c for a, c in counts.items() if a != answer]
            total += Fraction(score) * _plurality_weight(m, others, unparsed, n)
    return float(total / comb(k, n))


def _plurality_weight(m: int, others: Sequence[int], unparsed: int, n: int) -> Fraction:
    """Sum over n-subsets of [answer a has the most votes] / (number of answers tied with it).

    a holds m of the K samples, the other answers hold `others`, `unparsed` samples vote for
    nobody. For each v = a's votes in the subset (C(m, v) ways), a small DP over the other
    answers counts the ways they take `used` slots with at most v votes each, `ties` of them
    with exactly v; unparsed samples fill the remaining n - v - used slots.
    """
    weight = Fraction(0)
    width = len(others) + 1
    for v in range(1, min(m, n) + 1):
        room = n - v
        ways = [[0] * width for _ in range(room + 1)]  # ways[used][ties]
        ways[0][0] = 1
        for count in others:
            nxt = [[0] * width for _ in range(room + 1)]
            for used in range(room + 1):
                for ties in range(width - 1):
                    w = ways[used][ties]
                    if w:
                        for j in range(min(count, v, room - used) + 1):
                            nxt[used + j][ties + (j == v)] += w * comb(count, j)
            ways = nxt
        for ties in range(width):
            subsets = sum(ways[used][ties] * comb(unparsed, room - used) for used in range(room + 1))
            weight += Fraction(comb(m, v) * subsets, ties + 1)
    return weight


def best_at_n(scores: Sequence[float], n: int) -> float:
    """Expected best score over all n-subsets (pass@n for 0/1 scores).

    With scores sorted ascending, the i-th (0-based) is the subset's best exactly when the other
    n-1 come from the i below it: C(i, n-1) of the C(K, n) subsets (ties split by position,
    which leaves the value unchanged).
    """
    k = len(scores)
    _check_n(k, n)
    ordered = sorted(float(s) for s in scores)
    return sum(comb(i, n - 1) * s for i, s in enumerate(ordered) if i >= n - 1) / comb(k, n)


def pass_at_n(k: int, c: int, n: int) -> float:
    """The unbiased pass@n estimator from K samples with c correct: 1 - C(K-c, n) / C(K, n)."""
    _check_n(k, n)
    if not 0 <= c <= k:
        raise HarnessError(f"pass_at_n: c={c} correct samples must lie in 0..K={k}")
    return 1.0 - comb(k - c, n) / comb(k, n)


def draw_subsets(k: int, n: int, limit: int, rng: random.Random) -> list[tuple[int, ...]]:
    """All n-subsets of range(k) when there are at most `limit`, else `limit` distinct random ones.

    Each subset comes back in a random order (the order candidates are shown in), so a model's
    position bias averages out instead of favouring the earliest samples.
    """
    _check_n(k, n)
    if limit < 1:
        raise HarnessError(f"--subsets must be >= 1 (got {limit})")
    if comb(k, n) <= limit:
        chosen = list(combinations(range(k), n))
    else:
        seen: set[tuple[int, ...]] = set()
        chosen = []
        while len(chosen) < limit:  # terminates: more than `limit` subsets exist
            subset = tuple(sorted(rng.sample(range(k), n)))
            if subset not in seen:
                seen.add(subset)
                chosen.append(subset)
    return [tuple(rng.sample(subset, n)) for subset in chosen]


# --- methods: each turns a pool of K samples into per-item expected scores at every n --------------
@dataclass
class SamplePool:
    """K sampled outputs per item (records as in samples.jsonl: output, extracted, score)."""

    task: Task
    items: dict[str, Item]
    samples: dict[str, list[dict[str, Any]]]  # item id -> its records, by sample index

    def check_ns(self, ns: Sequence[int], where: str) -> None:
        item_id = min(self.samples, key=lambda i: len(self.samples[i]))
        k = len(self.samples[item_id])
        if max(ns) > k:
            raise HarnessError(f"n={max(ns)} is larger than K={k}, the samples of item {item_id!r} in {where}; lower --n")


@dataclass(frozen=True)
class MethodCurve:
    """A method at one n: each item's expected score, and its Monte Carlo variance (0: exact)."""

    scores: dict[str, float]
    mc_var: dict[str, float] = field(default_factory=dict)


class Method(Protocol):
    name: str
    needs_model: bool

    def curve(self, pool: SamplePool, ns: Sequence[int], ctx: Any) -> dict[int, MethodCurve]: ...


def _vote(extracted: Any) -> Any:
    # Extracted answers are strings for every task so far; anything else votes by its JSON form.
    return extracted if extracted is None or isinstance(extracted, str) else json.dumps(extracted, sort_keys=True)


class MajorityVote:
    name, needs_model = "majority-vote", False

    def curve(self, pool, ns, ctx=None):
        out: dict[int, MethodCurve] = {}
        for n in ns:
            scores = {}
            for item_id, records in pool.samples.items():
                votes = [_vote(r["extracted"]) for r in records]
                value = {v: float(r["score"]) for v, r in zip(votes, records) if v is not None}
                scores[item_id] = majority_at_n(votes, value, n)
            out[n] = MethodCurve(scores)
        return out


class PassAtN:
    name, needs_model = "pass@n", False

    def curve(self, pool, ns, ctx=None):
        return {n: MethodCurve({i: best_at_n([r["score"] for r in rs], n) for i, rs in pool.samples.items()}) for n in ns}


__all__ = [
    "SELECT_INSTRUCTION", "MajorityVote", "Method", "MethodCurve", "PassAtN", "SamplePool",
    "best_at_n", "draw_subsets", "majority_at_n", "parse_ns", "pass_at_n", "read_selection", "selection_prompt",
]
