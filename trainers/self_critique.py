"""`self_critique`: the model judges its own answers, then DPO on the pairs it judged consistently.

    harness train self_critique --base tiny --task geoqa --out checkpoints/built/self_critique

1. Sample two answers per training prompt (temperature > 0); identical answers make no pair.
2. Ask the model itself which answer is better, twice, with the order swapped (the judge prompt
   shows the question, its image and both replies). verdict=likelihood (default): the reply the
   model finds more likely as its answer to the judge prompt (mean token loss, the rule the
   harness uses for likelihood multiple choice); verdict=generate: the judge's generated text,
   read as the reply it repeats, else the first standalone 1 or 2 (neither = no verdict).
   Likelihood of the labels "1"/"2" is not offered: for small models it is a constant position
   bias (measured: a random tiny model preferred "1" for all 16 of 16 pairs in both orders).
3. Keep a pair only when both verdicts name the same answer: an order-dependent (position-biased)
   judgement is dropped. The winner is chosen, the loser rejected.
4. DPO (TRL's DPOTrainer, sigmoid loss) on a new LoRA adapter, the base (adapter disabled) the
   reference; started from an adapter (the seed's order: on SFTe), on a copy of it, a frozen copy
   the reference. Nothing is checked against the gold answer: the signal is the model's own judgement.

`judge=CHECKPOINT` (e.g. checkpoints/built/critic, a judge trained by the `critic` treatment) picks
the winner instead of the model itself: the harness judge's pairwise prompt, both orders, the
verdict it generates (the LLaVA post-training seed's "winner chosen with critic" variant).
"""
from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError
from trainers.common import TrainConfig, require
from trainers.data import Example, Pair

if TYPE_CHECKING:
    from harness.models.backend import HFBackend
    from trainers.formats import Source

JUDGE_TEMPLATE = (
    "{question}\n\nTwo candidate replies to the question above.\n"
    "Reply 1: {first}\nReply 2: {second}\nWhich reply is correct? Give the correct reply."
)
VERDICTS = ("likelihood", "generate")


@dataclass
class SelfCritiqueConfig(TrainConfig):
    """Self-critique settings (plus the shared TrainConfig fields)."""

    temperature: float = field(default=1.0, metadata={"help": "temperature of the two sampled answers"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "answer budget (None: the task's own)"})
    judge_template: str = field(default=JUDGE_TEMPLATE, metadata={"help": "judge prompt with {question}, {first}, {second}"})
    verdict: str = field(default="likelihood", metadata={"help": "likelihood: the reply the model finds more likely; generate: parse the judge's output"})
    sample_batch_size: int = field(default=32, metadata={"help": "prompts per sampling / judging call"})
    beta: float = field(default=0.1, metadata={"help": "DPO KL strength"})
    sft_weight: float = field(
        default=0.0,
        metadata={"help": "weight of an SFT (NLL) term on the chosen reply beside DPO (RPO; TRL loss_type "
                          "['sigmoid', 'sft']): holds up the chosen replies' likelihood, which plain DPO can lower too"},
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    judge: str | None = field(default=None, metadata={"help": "a judge checkpoint that picks the winners (e.g. checkpoints/built/critic); default: the model judges itself"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.micro_batches == 1, "micro_batches applies to SFT-style training; preference pairs train whole (set 1)")
        require(self.temperature > 0, "temperature must be > 0 (two greedy answers would be identical)")
        require(0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]")
        require(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens must be >= 1 or null")
        require(self.verdict in VERDICTS, f"verdict must be one of {', '.join(VERDICTS)}")
        require(self.sample_batch_size >= 1, "sample_batch_size must be >= 1")
        require(self.beta > 0, "beta must be > 0")
        require(self.sft_weight >= 0, "sft_weight must be >= 0")
        try:
            self.judge_template.format(question="q", first="a", second="b")
        except (KeyError, IndexError, ValueError) as e:
            raise HarnessError(f"config: judge_template must use only {{question}}, {{first}}, {{second}} ({e!r})") from None


# --- judging ---------------------------------------------------------------------------------------
def agreed_pairs(candidates: Sequence[tuple[int, str, str]], forward: Sequence[int | None],
                 swapped: Sequence[int | None]) -> list[Pair]:
    """Pairs whose two verdicts agree. candidates[i] = (example index, a, b); forward[i] is the
    verdict (1, 2 or None) with a shown first, swapped[i] with b shown first."""
    pairs = []
    for (index, a, b), fwd, swp in zip(candidates, forward, swapped, strict=True):
        if fwd == 1 and swp == 2:
            pairs.append(Pair(index, a, b, "critique"))
        elif fwd == 2 and swp == 1:
            pairs.append(Pair(index, b, a, "critique"))
    return pairs


def parse_verdict(output: str, first: str, second: str) -> int | None:
    """A generated verdict (model text: anything may come back): the one reply it repeats, else
    the first standalone 1 or 2, else None."""
    has_first, has_second = bool(first) and first in output, bool(second) and second in output
    if has_first != has_second:
        return 1 if has_first else 2
    m = re.search(r"(?<!\d)([12])(?!\d)", output)
    return int(m.group(1)) if m else None


def judge(backend: "HFBackend", examples: Sequence[Example], jobs: Sequence[tuple[int, str, str]],
          cfg: SelfCritiqueConfig, gen, advance=lambda k=1: None) -> list[int | None]:
    """The model's verdict (1, 2 or None) on each (example index, first, second)."""
    import torch

    from harness.models.backend import sequence_losses

    verdicts: list[int | None] = []
    for start in range(0, len(jobs), cfg.sample_batch_size):
        chunk = jobs[start:start + cfg.sample_batch_size]
        texts = [cfg.judge_template.format(question=examples[i].text, first=a, second=b) for i, a, b in chunk]
        images = [examples[i].images for i, _, _ in chunk]
        if cfg.verdict == "generate":
            outs = backend.generate_images(texts, images, gen, n=1)
            verdicts += [parse_verdict(o[0], a, b) for o, (_, a, b) in zip(outs, chunk)]
        else:
            batch = backend.batch_inputs(texts * 2, images * 2, [a for _, a, _ in chunk] + [b for _, _, b in chunk])
            labels = batch.pop("labels")
            with torch.inference_mode():
                losses = sequence_losses(backend.model(**batch).logits.float(), labels)
            one, two = losses.chunk(2)
            verdicts += [1 if l1 < l2 else 2 if l2 < l1 else None for l1, l2 in zip(one.tolist(), two.tolist())]
        advance(len(chunk))
    return verdicts


def critic_verdicts(judge_backend: "HFBackend", examples: Sequence[Example], jobs: Sequence[tuple[int, str, str]],
                    cfg: SelfCritiqueConfig, gen, advance=lambda k=1: None) -> list[int | None]:
    """A separate judge's verdict (1, 2 or None; a tie is None) on each (example index, first,
    second), in the prompt the harness judge sends (what a `critic`-trained judge learned)."""
    from harness.judge.pipeline import pairwise_prompt, parse_verdict as judge_verdict

    verdicts: list[int | None] = []
    for start in range(0, len(jobs), cfg.sample_batch_size):
        chunk = jobs[start:start + cfg.sample_batch_size]
        # The item's own question (not the task's instruction-wrapped prompt), as the judge saw in training.
        texts = [pairwise_prompt(examples[i].item.question, a, b) for i, a, b in chunk]
        outs = judge_backend.generate_images(texts, [examples[i].images for i, _, _ in chunk], gen, n=1)
        verdicts += [{"1": 1, "2": 2}.get(judge_verdict(o[0])) for o in outs]
        advance(len(chunk))
    return verdicts


def load_judge(path: str, device: str | None) -> "HFBackend":
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    return HFBackend(resolve_checkpoint(path), device=device)


# --- the treatment ---------------------------------------------------------------------------------
def run(cfg: SelfCritiqueConfig, base: str, tasks: str, out: Path, data_dir: str | Path | None = None,
        overwrite: bool = False, progress: bool = True, device: str | None = None,
        sources: Sequence["Source"] = ()) -> dict[str, Any]:
    """Sample, self-judge, filter, DPO on the train split of `tasks` (a name or comma-separated
    names) and the prompts of data files `sources` (their last user turn); write `out` (a PEFT adapter) + manifest.json."""
    from dataclasses import replace

    from trl import DPOConfig

    from harness.core.parallel import computed_on_main
    from trainers.common import (load_base, lora_config, prepare_trainer, quiet_libraries, sampling_progress,
        save_adapter, staged_output, train_metrics, trainable_start, trl_args, write_manifest)
    from trainers.data import PairCollator, index_dataset, load_train_data
    from trainers.mpo import PairDPOTrainer
    from trainers.replay import replay_for, replay_pairs
    from trainers.sampling import sample_answers, sampling_gen

    quiet_libraries()
    examples, data = load_train_data(tasks, data_dir, cfg.limit, sources=sources)
    replayed = replay_for(data, len(examples), cfg, data_dir)  # gold pairs of the other tasks, never judged
    label = data["task"]
    t0 = time.time()
    with staged_output(Path(out), overwrite) as stage:
        # from an adapter (the seed: self-critique on SFTe): it samples and judges, then DPO trains a copy
        # of it against a frozen copy as the reference (TRL's "ref" adapter), so the KL anchor is SFTe
        backend, base_name = load_base(base, cfg.qlora, device, start_from_adapter="self_critique")
        gen = sampling_gen(cfg, examples)

        def sample_and_judge():
            with sampling_progress(progress, f"self_critique sampling {label}", len(examples)) as advance:
                samples = sample_answers(backend, examples, 2, gen, cfg.sample_batch_size, advance)
            candidates = [(i, a.strip(), b.strip()) for i, (a, b) in enumerate(samples) if a.strip() != b.strip()]
            judge_gen = replace(gen, temperature=0.0, max_new_tokens=8)
            judge_backend = load_judge(cfg.judge, device) if cfg.judge else None

            def judging(backend, examples, jobs, cfg, judge_gen, advance):
                if judge_backend is None:
                    return judge(backend, examples, jobs, cfg, judge_gen, advance)
                return critic_verdicts(judge_backend, examples, jobs, cfg, replace(judge_gen, max_new_tokens=16), advance)

            with sampling_progress(progress, f"self_critique judging {label}", 2 * len(candidates)) as advance:
                forward = judging(backend, examples, candidates, cfg, judge_gen, advance)
                swapped = judging(backend, examples, [(i, b, a) for i, a, b in candidates], cfg, judge_gen, advance)
            return candidates, forward, swapped

        candidates, forward, swapped = computed_on_main(sample_and_judge)  # every rank trains on rank 0's pairs
        pairs = agreed_pairs(candidates, forward, swapped)
        stats = {"candidates": len(candidates), "identical_samples": len(examples) - len(candidates),
                 "agreed": len(pairs), "no_verdict": sum(v is None for v in forward + swapped),
                 "chosen_correct": _correct_rate(examples, pairs, "chosen"),
                 "rejected_correct": _correct_rate(examples, pairs, "rejected")}
        if pairs and replayed:
            pairs += replay_pairs(replayed, len(examples), cfg.seed)
            examples = examples + replayed
        sample_seconds = time.time() - t0
        if not pairs:
            raise HarnessError(
                f"self_critique: no pair survived the order-swap check ({len(candidates)} candidate pairs from "
                f"{len(examples)} prompts); train on more prompts or raise temperature"
            )
        start = getattr(backend, "start_adapter", None)
        model = trainable_start(backend.model, start)
        with tempfile.TemporaryDirectory() as work:
            losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight else {"loss_type": ["sigmoid"]}
            args = trl_args(DPOConfig, cfg, Path(work), beta=cfg.beta, max_length=None, **losses)
            trainer = PairDPOTrainer(
                model=model, args=args, train_dataset=index_dataset(len(pairs)),
                data_collator=PairCollator(backend, examples, pairs), processing_class=backend.tokenizer,
                peft_config=None if start else lora_config(cfg),
            )
            prepare_trainer(trainer, progress, f"self_critique {label}")
            trainer.train()
        metrics = train_metrics(trainer)
        metrics.update(sample_seconds=round(sample_seconds, 1), wall_seconds=round(time.time() - t0, 1))
        save_adapter(trainer.model, stage, base_name)
        return write_manifest(
            stage, "self_critique", cfg, base=base_name, base_hash=backend.content_hash,
            data={**data, "pairs": len(pairs), **stats},
            metrics=metrics, start_adapter=start,
        )


def _correct_rate(examples: Sequence[Example], pairs: Sequence[Pair], side: str) -> float | None:
    """How often the self-judged winner (or loser) is right by the gold answer: a diagnostic only."""
    hits = []
    for p in pairs:
        ex = examples[p.index]
        if ex.task is None:
            continue  # a data file's prompt: no gold answer to check against
        hits.append(ex.task.score(ex.task.extract(getattr(p, side), ex.item), ex.item))
    return round(sum(hits) / len(hits), 4) if hits else None
