"""Self-select (R3V's test-time selection) asks the model: the model-driving half of `harness compare`.

The model reads the question and n of an item's K sampled candidates (harness.stats.selection's
`selection_prompt`) and names the correct one; its reply is extracted and scored by the task. It
runs through the runner, so its prompts are cached and logged like any eval; one question's prompts
are batched together (`Task.batch_group`) and share one prefill of their common prefix, image and
question. The exact estimators and the model-free methods stay in harness/stats/selection.py.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from harness.core.images import image_digest
from harness.core.runner import Backend, EvalSettings, evaluate
from harness.core.store import GenerationCache
from harness.core.task import Task
from harness.core.types import GenConfig, Item
from harness.errors import HarnessError
from harness.stats.selection import MethodCurve, draw_subsets, read_selection, selection_prompt


@dataclass
class ModelContext:
    """What a method that asks the model needs (absent when scoring predictions)."""

    backend: Backend
    cache: GenerationCache
    run_dir: Path
    gen: GenConfig = GenConfig()
    batch_size: int = 16
    data_dir: Path | None = None
    progress: Any = None


class _SelectionTask(Task):
    """Selection prompts as runner items; replies extracted and scored by the original task."""

    name = "self-select"

    def __init__(self, base: Task, base_items: dict[str, Item], by_question: bool = True) -> None:
        super().__init__()
        self.base, self.base_items, self.by_question = base, base_items, by_question
        self.max_new_tokens = base.max_new_tokens  # type: ignore[misc]  # per instance on purpose

    def prompt(self, item: Item) -> str:
        return item.question

    def extract(self, output: str, item: Item) -> str | None:
        return read_selection(self.base, output, self.base_items[item.metadata["of"]])

    def score(self, extracted: str | None, item: Item) -> float:
        return self.base.score(extracted, self.base_items[item.metadata["of"]])

    def batch_group(self, item: Item) -> str | None:
        # One question's prompts in the same batches: they share its prefix (else the runner's
        # plain order: all prompts by length).
        return item.metadata["of"] if self.by_question else None


class _ConstrainedSelectionTask(_SelectionTask):
    """The same selection prompts, the reply chosen among the candidates' own final answers by the
    model's likelihood (item.choices) instead of generated."""

    name = "self-select-likelihood"
    request_type = "choice_likelihood"


def candidate_answers(task: Task, item: Item, outputs: Sequence[str]) -> list[str]:
    """The distinct final answers among candidate outputs, as replies: each candidate's text from
    its last "answer" marker ("Answer: 130°") when that part alone extracts to the candidate's
    answer, else the whole output; one per extracted answer (the first seen); unparsed ones dropped."""
    seen: dict[str, str] = {}
    for text in outputs:
        value = task.extract(text, item)
        if value is None:
            continue
        at = text.lower().rfind("answer")
        tail = text[at:] if at >= 0 else text
        reply = tail if task.extract(tail, item) == value else text
        seen.setdefault(json.dumps(value, sort_keys=True, default=str), reply)
    return list(seen.values())


class _PrefixSharing:
    """The backend, with the prompts of one question (same images) answered from ONE prefill of
    their common prefix, image and question: the backend's `generate_common_prefix` capability
    (HFBackend, harness.models.shared_prefix.common_prefix_generate), which returns None where it
    does not apply; those prompts are generated as usual. Same name and content hash, so cache
    keys and outputs do not change."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name, self.content_hash = backend.name, backend.content_hash

    def load(self) -> None:  # a lazily loaded model loads before the run writes anything
        load = getattr(self.backend, "load", None)
        if load is not None:
            load()

    def check_prompts(self, *args: Any, **kwargs: Any) -> None:
        check = getattr(self.backend, "check_prompts", None)
        if check is not None:
            check(*args, **kwargs)

    def choice_losses(self, *args: Any, **kwargs: Any):
        return self.backend.choice_losses(*args, **kwargs)

    def generate(self, prompts, gen, n=1, blind=False, seeds=None):
        if n == 1 and not blind:
            replies = self.backend.generate_common_prefix(prompts, gen)
            if replies is not None:
                return replies
        return self.backend.generate(prompts, gen, n=n, blind=blind, seeds=seeds)


@dataclass
class SelfSelect:
    """R3V's test-time selection, with R random candidate subsets per item and n. likelihood=True
    (`self-select-likelihood`): the reply is not generated but chosen among the subset's distinct
    candidate answers by the model's mean token loss, so it always names a candidate; the gap to
    generated self-select is what answering past the candidates costs, and what remains is how
    well the model tells a right candidate from a wrong one."""

    subsets: int = 8
    seed: int = 0
    name: str = "self-select"
    needs_model: bool = True
    share_prefix: bool = True  # False: every prompt prefilled whole, batched by length (the way before sharing)
    likelihood: bool = False
    # False (`max-likelihood`, with likelihood=True): the question alone, no candidate list: the pick
    # is the candidate answer the model finds likeliest as its own reply, the control that tells
    # whether reading the candidates adds anything to the model's own preference.
    show_candidates: bool = True

    def curve(self, pool, ns, ctx=None):
        if ctx is None:
            raise HarnessError(f"{self.name} needs a model: pass --ckpt (with --predictions only majority-vote and pass@n run)")
        if not self.likelihood and not self.show_candidates:
            raise HarnessError("show_candidates=False needs likelihood=True: a generated reply to the bare question is a new sample")
        # One runner item per distinct prompt: subsets showing the same texts in the same order
        # (repeated samples) share a reply, and the runner keys requests by content anyway.
        prompts: dict[str, Item] = {}
        uses: dict[str, list[tuple[str, int]]] = defaultdict(list)  # prompt id -> (item id, n) per subset
        answered: list[tuple[str, int, str]] = []  # (item id, n, reply) per subset; likelihood: < 2 answers need no model
        for item_id, records in pool.samples.items():
            item = pool.items[item_id]
            question = pool.task.prompt(item)
            images = "".join(image_digest(ref) for ref in item.images)
            for n in ns:
                rng = random.Random(f"{self.seed}:{item_id}:{n}")  # stable per item, whatever else runs
                for subset in draw_subsets(len(records), n, self.subsets, rng):
                    outputs = [records[i]["output"] for i in subset]
                    text = selection_prompt(question, outputs) if self.show_candidates else question
                    choices = candidate_answers(pool.task, item, outputs) if self.likelihood else []
                    if self.likelihood and len(choices) < 2:  # nothing to choose: the one answer, or none
                        answered.append((item_id, n, choices[0] if choices else ""))
                        continue
                    pid = "select-" + hashlib.sha256((text + images + "".join(choices)).encode()).hexdigest()[:20]
                    uses[pid].append((item_id, n))
                    if pid not in prompts:
                        prompts[pid] = replace(item, id=pid, question=text, group=item.cluster, metadata={"of": item_id},
                                               choices=tuple(choices) or item.choices)
        settings = EvalSettings(gen=replace(ctx.gen, temperature=0.0), batch_size=ctx.batch_size)
        if self.likelihood:
            folder = "self_select_likelihood" if self.show_candidates else "max_likelihood"
            run_dir, task = ctx.run_dir / folder, _ConstrainedSelectionTask(pool.task, pool.items)
            backend = ctx.backend
        else:
            run_dir, task = ctx.run_dir / "self_select", _SelectionTask(pool.task, pool.items, self.share_prefix)
            shares = self.share_prefix and hasattr(ctx.backend, "generate_common_prefix")  # a backend capability
            backend = _PrefixSharing(ctx.backend) if shares else ctx.backend
        replies: dict[str, str] = {}
        if prompts:
            result = evaluate(backend, task, list(prompts.values()), settings, run_dir,
                              ctx.cache, data_dir=ctx.data_dir, progress=ctx.progress)
            replies = {r["id"]: r["output"] for r in result.records if r["id"] in uses}
        answered += [(item_id, n, replies[pid]) for pid, where in uses.items() for item_id, n in where]
        picked: dict[tuple[str, int], list[float]] = defaultdict(list)
        for item_id, n, reply in answered:  # scored against each subset's own item
            item = pool.items[item_id]
            picked[(item_id, n)].append(float(pool.task.score(read_selection(pool.task, reply, item), item)))
        out = {}
        for n in ns:
            scores, var = {}, {}
            for item_id, records in pool.samples.items():
                xs = picked[(item_id, n)]
                scores[item_id] = sum(xs) / len(xs)
                var[item_id] = _mc_variance(xs, math.comb(len(records), n))
            out[n] = MethodCurve(scores, var)
        return out


def _mc_variance(xs: Sequence[float], population: int) -> float:
    """Variance of the mean of R subsets drawn without replacement from `population` subsets."""
    r = len(xs)
    if r >= population:
        return 0.0  # every subset was asked: exact
    mean = sum(xs) / r
    # One draw leaves the spread unknown: 1/4 bounds the variance of any score in [0, 1].
    s2 = sum((x - mean) ** 2 for x in xs) / (r - 1) if r > 1 else 0.25
    return s2 / r * (1 - r / population)
