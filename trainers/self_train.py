"""`self_train`: R3V self-training (Cheng et al. 2024, "Vision-Language Models Can Self-Improve
Reasoning via Reflection").

    harness train self_train --base tiny --task geoqa --out ckpts/st [iterations=3 samples_per_question=4]
    harness eval --ckpt ckpts/st/iter3 --tasks geoqa

For k = 1..K: sample S chain-of-thought answers per training question from the current model
(the base for k = 1, the iteration k-1 adapter after that; temperature 0.9, top_p 0.95, top_k 50),
judge each with the task's own extract + score, add them to the pool of all iterations' samples,
and build from the pool, per question:
- cot:    the question -> one correct rationale (the newest iteration's, as R3V picks);
- refine: the question + a wrong prediction + "Judge the correctness of the model's prediction and
          refine it." -> a correct rationale (questions with both kinds);
- select: the question + 2-3 shuffled candidates mixing correct and wrong (2 right + 1 wrong and
          1 right + 2 wrong, when there are enough; else 1 + 1), in exactly the prompt
          `harness compare ... self-select` asks (`harness.stats.selection.selection_prompt`) -> the final
          answer of a correct candidate ("Answer: ...");
- qa:     the question + "Answer directly, without reasoning." -> the gold final answer (from the
          train split, not sampled; qa=cot: the task prompt -> its reference rationale).
Then a FRESH LoRA is trained on the base (TRL SFTTrainer, loss on the reply tokens only) and saved
as <out>/iter<k>: a loadable adapter with its manifest, its training items (train_items.jsonl) and
that iteration's judged samples (samples.jsonl). <out>/manifest.json has the per-iteration
statistics and `harness train` prints the last iteration to evaluate.

"The data of all iterations so far" is the pooled samples, as in R3V (its builder reads every
iteration's sampling results): a question solved only in iteration 1 still gets cot/refine/select
items in iteration 3, while the training set stays ~one item of each kind per question instead of
growing with k (a union of per-iteration item lists would repeat each solved question k times).
A sample is correct when its score is 1, wrong when it is 0 (partial credit: neither); an empty
output takes no part in refine/select items.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from trainers.common import TrainConfig, require
from trainers.data import Example
from trainers.self_items import (  # noqa: F401  (the item builders, re-exported for callers of self_train)
    KINDS, REFINE_INSTRUCTION, Sample, SelfItem, as_examples, build_items, candidate_range, check_candidates,
    check_select_target, final_answer, item_counts, judge, refine_prompt, selection_prompt)

if TYPE_CHECKING:
    from harness.models.backend import HFBackend
    from trainers.formats import Source

QA_MODES = ("direct", "cot", "none")
# R3V's plain QA data asks for the answer alone in a prompt of its own. Under the task's own
# chain-of-thought prompt a bare "Answer: X" reply teaches answering before reasoning: measured on
# tiny at lr 1e-3, 200 such items took geoqa from 66.7 to 41.0 (48.7 with this instruction added;
# at the default lr 1e-4 the whole mix costs <= 1 point).
QA_INSTRUCTION = "Answer directly, without reasoning."


@dataclass
class SelfTrainConfig(TrainConfig):
    """R3V self-training settings (plus the shared TrainConfig fields, applied to every iteration)."""

    iterations: int = field(default=3, metadata={"help": "K: sample -> build -> train rounds; each keeps its adapter (iter1..K)"})
    samples_per_question: int = field(default=4, metadata={"help": "S: answers sampled per training question per iteration"})
    temperature: float = field(default=0.9, metadata={"help": "sampling temperature, in (0, 2]"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold, in (0, 1]"})
    top_k: int = field(default=50, metadata={"help": "sample from the k most likely tokens (0: no top-k filter)"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "sampling budget (None: the task's own)"})
    sample_batch_size: int = field(default=32, metadata={"help": "prompts per sampling call"})
    select_per_question: int = field(default=2, metadata={"help": "at most this many self-select items per question and iteration (0: none)"})
    refine: bool = field(default=True, metadata={"help": "build self-refine items"})
    select_candidates: str = field(default="2..3", metadata={"help": "candidates per select item: '2..3' (R3V's sets: 2 right + 1 wrong, 1 right + 2 wrong) or a range 'LO..HI' drawn uniformly (e.g. 2..10, what `harness compare --n` asks)"})
    select_target: str = field(default="answer", metadata={"help": "a select item's reply: 'answer' (the right candidate's final answer, R3V's) or 'rationale' (that candidate restated whole)"})
    select_extra_epochs: int = field(default=0, metadata={"help": "after each iteration's training, at most this many more passes over the select items alone while their mean token loss is above the reasoning (cot) items' (0: none); both losses are reported"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (1e-3 wrecked tiny's chain of thought: the new formats start at ~3 nats)"})
    qa: str = field(default="direct", metadata={"help": "plain question-answer items: 'direct' (the question + 'Answer directly...' -> the gold 'Answer: ...'), 'cot' (the task prompt -> its reference rationale) or 'none'"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.iterations >= 1, "iterations must be >= 1")
        require(self.samples_per_question >= 1, "samples_per_question must be >= 1")
        require(0.0 < self.temperature <= 2.0, "temperature must be in (0, 2] (self-training samples; 0 would be greedy)")
        require(0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]")
        require(self.top_k >= 0, "top_k must be >= 0 (0 disables it)")
        require(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens must be >= 1 or null")
        require(self.sample_batch_size >= 1, "sample_batch_size must be >= 1")
        require(self.select_per_question >= 0, "select_per_question must be >= 0")
        require(self.qa in QA_MODES, f"qa must be one of {', '.join(QA_MODES)}")
        check_candidates(self.select_candidates)
        check_select_target(self.select_target)
        require(self.select_extra_epochs >= 0, "select_extra_epochs must be >= 0")


def qa_items(examples: Sequence[Example], mode: str = "direct") -> list[SelfItem]:
    """The gold data, one item per question (`examples` carry the task's reference rationale)."""
    if mode == "none":
        return []
    if mode == "cot":
        return [SelfItem("qa", i, e.text, e.target) for i, e in enumerate(examples)]
    items = []
    for i, e in enumerate(examples):
        at = e.target.rfind("Answer:")
        items.append(SelfItem("qa", i, f"{e.text}\n{QA_INSTRUCTION}", e.target[at:] if at >= 0 else e.target))
    return items


def kind_losses(backend: "HFBackend", items: Sequence[SelfItem], examples: Sequence[Example],
                kinds: Sequence[str] = ("cot", "select"), batch_size: int = 16) -> dict[str, float]:
    """Mean per-token reply loss of the training items of each kind (the model as it is now)."""
    import torch

    from harness.models.backend import sequence_losses

    out = {}
    for kind in kinds:
        chosen = [it for it in items if it.kind == kind]
        losses: list[float] = []
        for start in range(0, len(chosen), batch_size):
            chunk = chosen[start:start + batch_size]
            batch = backend.batch_inputs([it.prompt for it in chunk], [examples[it.index].images for it in chunk],
                                         [it.target for it in chunk])
            labels = batch.pop("labels")
            with torch.inference_mode():
                losses += sequence_losses(backend.model(**batch).logits.float(), labels).tolist()
        if losses:
            out[kind] = round(sum(losses) / len(losses), 4)
    return out


# --- the treatment -------------------------------------------------------------------------------------
def run(cfg: SelfTrainConfig, base: str, tasks: str, out: Path, data_dir: str | Path | None = None,
        overwrite: bool = False, progress: bool = True, device: str | None = None,
        sources: Sequence["Source"] = ()) -> dict[str, Any]:
    """K rounds of sample -> judge -> build -> train a fresh LoRA; writes <out>/iter1..K (adapters with
    manifests) and <out>/manifest.json. Returns the top-level manifest. Data files `sources` (--data)
    join every iteration's SFT as they are (they are not sampled)."""
    from harness.errors import HarnessError
    from harness.core.store import atomic_write_jsonl
    from trainers.common import (load_base, quiet_libraries, save_adapter, staged_output,
        train_metrics, write_manifest)
    from trainers.data import load_data_files, load_train_data
    from trainers.replay import replay_for
    from trainers.sampling import draw_on_main, sampling_gen

    quiet_libraries()
    examples, data = load_train_data(tasks, data_dir, cfg.limit, "cot")
    extra: list[Example] = []
    if sources:
        extra, data["sources"] = load_data_files(sources, cfg.limit)
    extra += replay_for(data, len(examples), cfg, data_dir)  # joins every iteration's SFT as it is, like data files
    base_items = qa_items(examples, cfg.qa)
    rng = random.Random(cfg.seed)
    t0 = time.time()
    with staged_output(Path(out), overwrite) as stage:
        backend, base_name = load_base(base, cfg.qlora, device, start_from_adapter="self_train")
        pool: list[list[Sample]] = [[] for _ in examples]  # every iteration's judged samples, per question
        history: list[dict[str, Any]] = []
        for k in range(1, cfg.iterations + 1):
            t_iter = time.time()
            gen = sampling_gen(cfg, examples, seed=cfg.seed + 10_000 * k)  # each iteration draws fresh samples
            backend.model.eval()
            samples = draw_on_main(backend, examples, cfg.samples_per_question, gen, cfg.sample_batch_size, progress,
                                   f"self_train iter{k} sampling {data['task']}")  # every rank trains on rank 0's
            judged, stats = judge(examples, samples, k)
            for row, new in zip(pool, judged):
                row += new
            stats["sampled_from"] = f"iter{k - 1}" if k > 1 else "start" if getattr(backend, "start_adapter", None) else "base"
            stats["sample_seconds"] = round(time.time() - t_iter, 1)
            items = base_items + build_items(examples, pool, rng, cfg.select_per_question, cfg.refine,
                                             cfg.select_candidates, cfg.select_target)
            stats["train_items"] = {**item_counts(items), **({"data_files": len(extra)} if extra else {})}
            if not items:
                raise HarnessError(
                    f"self_train iteration {k}: no correct sample in {stats['samples']} and qa=none, so "
                    "nothing to train on; set qa=direct, raise samples_per_question, or train on more questions"
                )
            folder = stage / f"iter{k}"
            folder.mkdir()
            trainer = _train(backend, cfg, as_examples(items, examples) + extra, progress, f"self_train iter{k}")
            metrics = train_metrics(trainer)
            stats["train"] = {key: metrics[key] for key in ("steps", "train_seconds", "first_loss", "last_loss")}
            stats["train"].update(_match_select_loss(backend, trainer, cfg, items, examples, progress, k))
            save_adapter(trainer.model, folder, base_name)
            stats["seconds"] = round(time.time() - t_iter, 1)
            history.append(stats)
            atomic_write_jsonl(folder / "train_items.jsonl", [it.record(examples, k) for it in items])
            atomic_write_jsonl(folder / "samples.jsonl", [
                {"id": ex.item.id, "outputs": [x.text for x in row], "extracted": [x.extracted for x in row],
                 "scores": [x.score for x in row]} for ex, row in zip(examples, judged)])
            write_manifest(folder, "self_train", cfg, base=base_name, base_hash=backend.content_hash,
                           data={**data, "train_items": stats["train_items"]}, metrics=metrics,
                           iteration=k, iterations=history, start_adapter=getattr(backend, "start_adapter", None))
            backend.model = trainer.model  # iteration k+1 samples from this adapter
        totals = {"wall_seconds": round(time.time() - t0, 1),
                  "sample_seconds": round(sum(h["sample_seconds"] for h in history), 1),
                  "train_seconds": round(sum(h["train"]["train_seconds"] for h in history), 1),
                  "steps": sum(h["train"]["steps"] for h in history)}
        names = [f"iter{k}" for k in range(1, cfg.iterations + 1)]
        return write_manifest(stage, "self_train", cfg, base=base_name, base_hash=backend.content_hash, data=data,
                              metrics=totals, start_adapter=getattr(backend, "start_adapter", None),
                              iterations=history, checkpoints=names, evaluate=str(Path(out) / names[-1]))


def _match_select_loss(backend: "HFBackend", trainer: Any, cfg: SelfTrainConfig, items: Sequence[SelfItem],
                       examples: Sequence[Example], progress: bool, k: int) -> dict[str, Any]:
    """Further passes over the select items alone while their loss is above the reasoning items'
    (selection is a format a few hundred items teach slowly); the losses before and after each."""
    from trainers.sft import fit_lora_sft

    select = [it for it in items if it.kind == "select"]
    backend.model = trainer.model
    backend.model.eval()
    losses = [kind_losses(backend, items, examples)]
    extra = 0
    while select and extra < cfg.select_extra_epochs and losses[-1].get("select", 0) > losses[-1].get("cot", float("inf")):
        once = replace(cfg, epochs=1.0, max_steps=-1)
        trainer = fit_lora_sft(backend, trainer.model, as_examples(select, examples), once, progress,
                               f"self_train iter{k} select pass {extra + 1}", new_adapter=False)
        backend.model = trainer.model
        backend.model.eval()
        extra += 1
        losses.append(kind_losses(backend, items, examples))
    return {"item_losses": losses, "select_extra_epochs": extra}


def _train(backend: "HFBackend", cfg: SelfTrainConfig, train: list[Example], progress: bool, label: str):
    """A fresh LoRA on the base: the previous iteration's adapter is removed (not merged) first."""
    from peft import PeftModel

    from trainers.sft import fit_lora_sft

    if isinstance(backend.model, PeftModel):
        backend.model = backend.model.unload()
    return fit_lora_sft(backend, backend.model, train, cfg, progress, label)

