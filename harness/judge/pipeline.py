"""Judge pipeline: a VLM judge scores (pointwise) or compares (pairwise) stored answers.

    harness eval --ckpt tiny --tasks critic --judge tiny        # pointwise: a 0-100 score per answer
    harness eval --ckpt A --tasks critic --vs B --judge tiny    # pairwise: A's answers against B's
    harness critic agreement --judge tiny --votes votes.json    # how often the judge agrees with reference votes

LLaVA-Critic style (Xiong et al. 2024, "LLaVA-Critic: Learning to Evaluate Multimodal Models").
The answers are an ordinary generation run (samples.jsonl from harness.core.runner.evaluate); this
module reads those samples, asks a second backend (the judge) about each answer, caches every
reply in the GenerationCache under a key of (judge content hash, judge prompt with the answer in
it, image bytes, generation settings), and writes judgements.jsonl (raw reply, parsed score or
verdict, missing flag) and judged.json beside the samples (the run's own record, summary.json, is
left as the engine wrote it). Like samples.jsonl, judgements.jsonl
holds the raw replies, so every figure can be recomputed from it without the judge.

Rules:
- Pointwise: the first integer in the reply, clamped to [0, 100]. A reply with no integer is
  missing: counted and reported, never averaged in. Per-item score = mean of its parsed scores / 100.
- Pairwise: each pair is judged twice, the answers' order swapped. A verdict counts only when both
  orders name the same winner; otherwise it is a tie. A pair with an unparsable reply is missing.
  Per-item score = win + tie / 2 (50 = no preference); win, tie and loss rates get their own CIs.
- Position bias: consistency (share of pairs whose two verdicts agree) and the share of decisive
  verdicts that picked whichever answer was shown first (50% for an unbiased judge).
Scores, rates and their CIs are in percent; a figure with nothing to average over is null.
Nothing here knows a benchmark: items give the question and images, samples give the answers.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from harness.errors import ContextOverflow, HarnessError
from harness.core.store import GenerationCache, atomic_write_json, atomic_write_jsonl
from harness.core.types import GenConfig, ImageRef, Item, Prompt

Verdict = Literal["1", "2", "tie"]
PROMPT_VERSION = "critic-v1"  # change when a template changes; recorded in every summary
JUDGED_FILE = "judged.json"  # a judge's summary, beside judgements.jsonl (never the run's summary.json)

POINTWISE_TEMPLATE = (
    "You are a fair judge of answers to questions about an image. Look at the image, then rate how "
    "good the answer is (correct, grounded in the image, helpful) on a scale from 0 to 100.\n"
    "Question: {question}\n"
    "Answer: {answer}\n"
    "Give the score first, as a whole number from 0 to 100, then a short justification."
)
PAIRWISE_TEMPLATE = (
    "You are a fair judge of answers to questions about an image. Look at the image, then decide "
    "which answer is better (correct, grounded in the image, helpful).\n"
    "Question: {question}\n"
    "Answer1: {answer1}\n"
    "Answer2: {answer2}\n"
    "Give your verdict first: Answer1, Answer2 or Tie, then a short justification."
)

# An integer not glued to a word or a decimal point ("Q3", "0.85" -> 0, "COVID-19" -> 19).
_INTEGER = re.compile(r"(?<![\w.])([-\u2212]?)(\d+)")
_VERDICT = re.compile(r"answer\s*[_#-]?\s*([12])(?!\d)|\b(tie|equal(?:ly)?|unable to decide)\b", re.IGNORECASE)
_SWAP: dict[str, Verdict] = {"1": "2", "2": "1", "tie": "tie"}


def pointwise_prompt(question: str, answer: str) -> str:
    return POINTWISE_TEMPLATE.format(question=question.strip(), answer=answer.strip())


def pairwise_prompt(question: str, answer1: str, answer2: str) -> str:
    return PAIRWISE_TEMPLATE.format(question=question.strip(), answer1=answer1.strip(), answer2=answer2.strip())


def parse_score(reply: Any) -> int | None:
    """The first integer of the reply, clamped to [0, 100]; None (missing) when there is none."""
    if not isinstance(reply, str):
        return None
    m = _INTEGER.search(reply)
    if m is None:
        return None
    value = int(m.group(2)) * (-1 if m.group(1) else 1)
    return max(0, min(100, value))


def parse_verdict(reply: Any) -> Verdict | None:
    """The first verdict named in the reply: "1" (Answer1), "2" (Answer2), "tie"; else None."""
    if not isinstance(reply, str):
        return None
    m = _VERDICT.search(reply)
    if m is None:
        return None
    return m.group(1) or "tie"  # type: ignore[return-value]


def combine_orders(first: Verdict | None, swapped: Verdict | None) -> tuple[str | None, bool | None]:
    """Outcome for answer a from the verdicts on (a, b) and on (b, a), and whether they agree.

    Returns ("win" | "tie" | "loss", consistent), or (None, None) when a reply is missing.
    """
    if first is None or swapped is None:
        return None, None
    consistent = first == _SWAP[swapped]
    verdict = first if consistent else "tie"
    return {"1": "win", "2": "loss", "tie": "tie"}[verdict], consistent


# --- the judge: a backend whose replies are cached -------------------------------------------
@dataclass(frozen=True)
class JudgeSettings:
    max_new_tokens: int = field(default=48, metadata={"help": "judge reply budget: the score or verdict comes first, then a short justification", "kind": "positive"})
    batch_size: int = field(default=16, metadata={"help": "judge prompts per generate call", "kind": "positive"})
    ci_method: str = field(default="bootstrap", metadata={"help": "CI of the mean score and of the rates (see harness.stats.ci.score_ci)",
                                                          "flag": "--ci", "choices": ("bootstrap", "wilson", "clopper-pearson")})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise HarnessError(f"judge max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise HarnessError(f"judge batch_size must be >= 1, got {self.batch_size}")
        if self.ci_method not in ("bootstrap", "wilson", "clopper-pearson"):
            raise HarnessError(f"unknown CI method {self.ci_method!r}; choose bootstrap, wilson or clopper-pearson")


class Judge:
    """Ask a judge backend (anything with name, content_hash and generate) with cached replies.

    Greedy decoding, so a reply depends only on the key's contents and a re-run asks nothing.
    """

    def __init__(self, backend: Any, cache: GenerationCache, settings: JudgeSettings = JudgeSettings(),
                 progress: Any = None) -> None:
        self.backend, self.cache, self.settings, self.progress = backend, cache, settings, progress
        self.gen = GenConfig(max_new_tokens=settings.max_new_tokens, temperature=0.0, seed=0)
        self._digests: dict[Any, str] = {}

    @property
    def info(self) -> dict[str, Any]:
        return {"name": self.backend.name, "hash": self.backend.content_hash, "prompt": PROMPT_VERSION,
                "max_new_tokens": self.settings.max_new_tokens}

    def usage_mark(self) -> dict[str, Any] | None:
        """A served judge's usage so far (None for a local one), to take before a pass's asks."""
        usage = getattr(self.backend, "usage", None)
        return usage.as_dict() if usage is not None else None

    def served_since(self, mark: dict[str, Any] | None) -> dict[str, Any]:
        """judged.json's `served` block: the server (never the key) and what this pass asked of it."""
        if mark is None:
            return {}
        return {"served": {**self.backend.record(), "usage": self.backend.usage.since(mark)}}

    def _digest(self, ref: ImageRef) -> str:
        from harness.core.images import image_digest

        k = ref if isinstance(ref, bytes) else str(ref)
        if k not in self._digests:
            self._digests[k] = image_digest(ref)
        return self._digests[k]

    def key(self, prompt: Prompt) -> str:
        """The runner's cache key of a greedy reply to `prompt` (kind "judge", no item id)."""
        from harness.core.runner import prompt_hash, request_key

        return request_key(self.backend.content_hash, "judge", "", prompt_hash(prompt, digest=self._digest), self.gen)

    def ask(self, prompts: Sequence[Prompt], label: str = "judge") -> list[str]:
        """One reply per prompt; cached ones are not asked again, duplicates are asked once.
        Batched like the runner (shortest prompts first), every batch stored as it completes."""
        from harness.core.runner import generate_batches

        keys = [self.key(p) for p in prompts]
        unique = dict(zip(keys, prompts))
        replies = {k: out for k, (out, _) in self.cache.get_many(list(unique)).items()}
        todo = [(unique[k], [k]) for k in unique if k not in replies]
        bar = self.progress.add_task(f"{self.backend.name} {label}", total=len(todo)) if self.progress and todo else None
        for rows in generate_batches(self.backend, todo, self.gen, self.settings.batch_size):
            self.cache.put_many(rows)  # a killed pass resumes from here
            replies.update((k, out) for k, out, _ in rows)
            if bar is not None:
                self.progress.advance(bar, len(rows))
        return [replies[k] for k in keys]


# --- summaries (no model needed: they read judgement records) ----------------------------------
def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _pct_or_none(xs: Sequence[float]) -> float | None:
    return 100.0 * _mean(xs) if xs else None


def _ci(per_unit: dict[str, float], settings: JudgeSettings, clusters: dict[str, str] | None = None):
    """(mean, low, high) in percent over units (whole clusters resampled); Nones when empty."""
    from harness.stats.ci import score_ci

    if not per_unit:
        return None, None, None
    ids = sorted(per_unit)
    ci = score_ci([per_unit[i] for i in ids], clusters=[clusters[i] for i in ids] if clusters else None,
                  method=settings.ci_method, seed=settings.seed)
    return ci.estimate, ci.low, ci.high


def _rate(name: str, per_unit: dict[str, float], settings: JudgeSettings, clusters=None) -> dict[str, Any]:
    est, low, high = _ci(per_unit, settings, clusters)
    return {name: est, f"{name}_ci": [low, high]}


def _headline(per_unit: dict[str, float], settings: JudgeSettings) -> dict[str, Any]:
    est, low, high = _ci(per_unit, settings)
    return {"score": est, "ci_low": low, "ci_high": high, "ci_method": settings.ci_method}


def _counts(records: list[dict[str, Any]], units: dict[str, float]) -> dict[str, Any]:
    """n (scored items), sample and missing counts, per-category percent scores."""
    from harness.core.task import Unit, per_category

    categories = {r["id"]: r.get("category", "") for r in records}
    missing = sum(1 for r in records if r["missing"])
    return {"n": len(units), "n_items": len(categories), "n_samples": len(records), "missing": missing,
            "missing_items": len(categories) - len(units), "unparsed": missing,
            "categories": per_category([Unit(i, units[i], c) for i, c in categories.items() if i in units])}


def pointwise_units(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Item id -> mean parsed score / 100 over its samples; items with no parsed score are left out."""
    per_item: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if not r["missing"]:
            per_item[r["id"]].append(r["score"] / 100.0)
    return {i: _mean(v) for i, v in per_item.items()}


def pointwise_summary(records: list[dict[str, Any]], settings: JudgeSettings = JudgeSettings()) -> dict[str, Any]:
    units = pointwise_units(records)
    return {"mode": "pointwise", **_headline(units, settings), **_counts(records, units)}


def _outcome_rates(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    per_item: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if not r["missing"]:
            per_item[r["id"]].append(r["outcome"])
    return {i: {o: outs.count(o) / len(outs) for o in ("win", "tie", "loss")} for i, outs in per_item.items()}


def pairwise_units(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Item id -> win + tie / 2 (1 = always preferred, 0.5 = no preference), missing pairs left out."""
    return {i: u["win"] + u["tie"] / 2 for i, u in _outcome_rates(records).items()}


def position_figures(verdicts: Iterable[tuple[Verdict | None, Verdict | None]]) -> dict[str, Any]:
    """Position bias (percent) from (verdict on (a, b), verdict on (b, a)) per pair: consistency,
    and the share of decisive verdicts that chose the first slot (50 for an unbiased judge)."""
    pairs = [(x, y) for x, y in verdicts if x is not None and y is not None]
    decisive = [v for pair in pairs for v in pair if v != "tie"]
    return {
        "position_consistency": _pct_or_none([float(x == _SWAP[y]) for x, y in pairs]),
        "first_slot_rate": _pct_or_none([float(v == "1") for v in decisive]),
        "always_first": sum(1 for x, y in pairs if x == y == "1"),
        "always_second": sum(1 for x, y in pairs if x == y == "2"),
    }


def pairwise_summary(records: list[dict[str, Any]], settings: JudgeSettings = JudgeSettings()) -> dict[str, Any]:
    rates = _outcome_rates(records)
    units = pairwise_units(records)
    out: dict[str, Any] = {"mode": "pairwise", **_headline(units, settings)}
    for outcome in ("win", "tie", "loss"):
        out.update(_rate(f"{outcome}_rate", {i: u[outcome] for i, u in rates.items()}, settings))
    consistent: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if not r["missing"]:
            consistent[r["id"]].append(float(r["consistent"]))
    return {**out, **position_figures((r["verdict_ab"], r["verdict_ba"]) for r in records),
            **_rate("position_consistency", {i: _mean(v) for i, v in consistent.items()}, settings),
            **_counts(records, units)}


# --- passes over stored samples ----------------------------------------------------------------
@dataclass
class JudgeResult:
    summary: dict[str, Any]
    units: dict[str, float]  # item id -> score in [0, 1], what statistics and leaderboards resample
    records: list[dict[str, Any]]


def _answer(sample: dict[str, Any]) -> str:
    # The raw output as stored: the judge sees exactly what the model said (untrusted text).
    out = sample.get("output")
    return out if isinstance(out, str) else ""


def _both_orders(question: str, images: tuple[ImageRef, ...], a: str, b: str) -> tuple[Prompt, Prompt]:
    return Prompt(pairwise_prompt(question, a, b), images), Prompt(pairwise_prompt(question, b, a), images)


def _samples_for(items: dict[str, Item], samples: Iterable[dict[str, Any]], where: Path) -> dict[tuple[str, int], dict]:
    rows = {(s["id"], s["sample"]): s for s in samples if s.get("id") in items}
    if not rows:
        raise HarnessError(f"{where}: no answers to judge for these items; generate them first (harness eval)")
    return dict(sorted(rows.items()))


def judge_pointwise(judge: Judge, items: dict[str, Item], samples: Iterable[dict[str, Any]], run_dir: Path,
                    base: dict[str, Any] | None = None) -> JudgeResult:
    """Score every stored answer; write run_dir/judgements.jsonl and run_dir/judged.json."""
    rows = _samples_for(items, samples, run_dir)
    prompts = [Prompt(pointwise_prompt(items[i].question, _answer(s)), items[i].images) for (i, _), s in rows.items()]
    mark = judge.usage_mark()
    replies = judge.ask(prompts, "judge pointwise")
    records = []
    for ((item_id, k), s), reply in zip(rows.items(), replies):
        score = parse_score(reply)
        records.append({"id": item_id, "sample": k, "answer_key": s.get("key"), "reply": reply, "score": score,
                        "missing": score is None, "category": items[item_id].category})
    summary = {**(base or {}), **pointwise_summary(records, judge.settings), "judge": judge.info,
               **judge.served_since(mark), "unanswered": sum(1 for s in rows.values() if not _answer(s).strip())}
    atomic_write_jsonl(run_dir / "judgements.jsonl", records)
    atomic_write_json(run_dir / JUDGED_FILE, summary)
    return JudgeResult(summary, pointwise_units(records), records)


def judge_pairwise(judge: Judge, items: dict[str, Item], samples_a: Iterable[dict[str, Any]],
                   samples_b: Iterable[dict[str, Any]], out_dir: Path, base: dict[str, Any] | None = None) -> JudgeResult:
    """Compare a's answers with b's (same item, same sample index), each pair in both orders."""
    rows_a = _samples_for(items, samples_a, out_dir)
    rows_b = _samples_for(items, samples_b, out_dir)
    shared = [key for key in rows_a if key in rows_b]
    if not shared:
        raise HarnessError(f"{out_dir}: the two runs share no (item, sample); evaluate both on the same items")
    mark = judge.usage_mark()
    replies = judge.ask([p for key in shared for p in _both_orders(
        items[key[0]].question, items[key[0]].images, _answer(rows_a[key]), _answer(rows_b[key]))], "judge pairwise")
    records = []
    for n, (item_id, k) in enumerate(shared):
        reply_ab, reply_ba = replies[2 * n], replies[2 * n + 1]
        v_ab, v_ba = parse_verdict(reply_ab), parse_verdict(reply_ba)
        outcome, consistent = combine_orders(v_ab, v_ba)
        records.append({"id": item_id, "sample": k, "reply_ab": reply_ab, "reply_ba": reply_ba,
                        "verdict_ab": v_ab, "verdict_ba": v_ba, "outcome": outcome, "consistent": consistent,
                        "missing": outcome is None, "category": items[item_id].category})
    summary = {**(base or {}), **pairwise_summary(records, judge.settings), "judge": judge.info,
               **judge.served_since(mark), "dropped": len(rows_a) + len(rows_b) - 2 * len(shared)}
    atomic_write_jsonl(out_dir / "judgements.jsonl", records)
    atomic_write_json(out_dir / JUDGED_FILE, summary)
    return JudgeResult(summary, pairwise_units(records), records)


# --- agreement with reference verdicts -------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """A reference verdict on two answers to one question, in the order the reference saw them."""

    id: str
    cluster: str  # rows about the same question are resampled together
    question: str
    images: tuple[ImageRef, ...]
    answer1: str
    answer2: str
    reference: Verdict
    models: tuple[str, str] = ("", "")  # who wrote answer1 and answer2 (votes' model_1, model_2), if known


def shorten_answers(comparisons: Sequence[Comparison], words: int) -> tuple[list[Comparison], int]:
    """Each answer cut to its first `words` words (" ..." marks a cut), so reference votes on long
    answers fit a small judge's context; returns the comparisons and how many answers were cut.
    The reference judged the full answers: the cut count goes into the report beside the agreement."""
    cut = 0

    def short(text: str) -> str:
        nonlocal cut
        parts = text.split()
        if len(parts) <= words:
            return text
        cut += 1
        return " ".join(parts[:words]) + " ..."

    out = [dataclasses.replace(c, answer1=short(c.answer1), answer2=short(c.answer2)) for c in comparisons]
    return out, cut


def within_context(judge: Judge, comparisons: Sequence[Comparison]) -> tuple[list[Comparison], int]:
    """The comparisons whose prompts (both orders, plus the reply budget) fit the judge's context,
    and how many did not (a judge with no known context, e.g. a served one, keeps all)."""
    if hasattr(judge.backend, "load"):
        judge.backend.load()  # a lazy local judge knows its context only once loaded
    check = getattr(judge.backend, "check_prompts", None)
    if check is None:
        return list(comparisons), 0
    keep = []
    for c in comparisons:
        try:
            check([(c.id, p) for p in _both_orders(c.question, c.images, c.answer1, c.answer2)],
                  judge.settings.max_new_tokens)
        except ContextOverflow:  # any other error (a broken image, a bad prompt) still stops the run
            continue
        keep.append(c)
    return keep, len(comparisons) - len(keep)


def agreement(judge: Judge, comparisons: Sequence[Comparison], out_dir: Path,
              meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """How often the judge's verdict matches the reference, with CIs over questions.

    Each comparison is judged as shown and with the answers swapped (a swapped row of the votes
    file is then served from the cache). `agreement`: the judge's verdict on the same
    presentation the reference saw; `agreement_swapped`: the pipeline's order-checked verdict
    (tie unless both orders agree); `agreement_decisive`: the latter where neither side says tie.
    """
    if not comparisons:
        raise HarnessError("no reference verdicts to compare with; check the votes file")
    mark = judge.usage_mark()
    replies = judge.ask([p for c in comparisons for p in _both_orders(c.question, c.images, c.answer1, c.answer2)],
                        "judge agreement")
    records = []
    for n, c in enumerate(comparisons):
        same, swapped = parse_verdict(replies[2 * n]), parse_verdict(replies[2 * n + 1])
        outcome, _ = combine_orders(same, swapped)
        combined = None if outcome is None else {"win": "1", "loss": "2", "tie": "tie"}[outcome]
        records.append({"id": c.id, "cluster": c.cluster, "reference": c.reference, "reply": replies[2 * n],
                        "reply_swapped": replies[2 * n + 1], "verdict": same, "verdict_swapped": swapped,
                        "combined": combined, "missing": same is None})
    s, clusters = judge.settings, {r["id"]: r["cluster"] for r in records}

    def agree(key: str, keep=lambda r: True) -> dict[str, float]:
        return {r["id"]: float(r[key] == r["reference"]) for r in records if r[key] is not None and keep(r)}

    decisive = agree("combined", lambda r: "tie" not in (r["reference"], r["combined"]))
    summary = {
        "votes": len(records), "n": len(agree("verdict")), "missing": sum(r["missing"] for r in records),
        **_rate("agreement", agree("verdict"), s, clusters),
        **_rate("agreement_swapped", agree("combined"), s, clusters), "n_swapped": len(agree("combined")),
        **_rate("agreement_decisive", decisive, s, clusters), "n_decisive": len(decisive),
        "ci_method": s.ci_method,
        **position_figures((r["verdict"], r["verdict_swapped"]) for r in records),
        "reference_consistency": _reference_consistency(comparisons),
        "agreement_by_pair": _by_pair(comparisons, records),
        "reference_verdicts": dict(Counter(c.reference for c in comparisons)),
        "judge_verdicts": dict(Counter(r["verdict"] or "missing" for r in records)),
        "judge": judge.info, **judge.served_since(mark), **(meta or {}),
    }
    atomic_write_jsonl(out_dir / "judgements.jsonl", records)
    atomic_write_json(out_dir / JUDGED_FILE, summary)
    return summary


def _by_pair(comparisons: Sequence[Comparison], records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Agreement (as shown, unparsable = disagree) per pair of answer writers, whichever slot each
    took: where a judge's agreement comes from (MLLM-Bench: which models; gold votes: which qualities)."""
    by: dict[str, list[float]] = {}
    for c, r in zip(comparisons, records):
        if all(c.models):
            by.setdefault(" vs ".join(sorted(c.models)), []).append(float(r["verdict"] == r["reference"]))
    return {pair: {"n": len(xs), "agreement": _pct_or_none(xs)} for pair, xs in sorted(by.items())}


def _reference_consistency(comparisons: Sequence[Comparison]) -> float | None:
    """Percent of questions shown to the reference in both orders where its two verdicts agree."""
    seen: dict[tuple[str, str, str], Verdict] = {}
    agree = []
    for c in comparisons:
        twin = seen.get((c.cluster, c.answer2, c.answer1))
        if twin is not None:
            agree.append(float(c.reference == _SWAP[twin]))
        seen[(c.cluster, c.answer1, c.answer2)] = c.reference
    return _pct_or_none(agree)

