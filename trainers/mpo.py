"""`mpo`: Mixed Preference Optimization (Wang et al. 2024, "Enhancing the Reasoning Ability of
Multimodal Large Language Models via Mixed Preference Optimization", InternVL2-8B-MPO).

    harness train mpo --base tiny --task geoqa --out checkpoints/built/mpo [samples_per_question=4 ...]
    harness train mpo --base checkpoints/built/sft/seed0 --task geoqa --out ckpts/mpo-after-sft   (MPO's order)

1. Pairs from the model's own samples, by correctness: K samples per training question
   (temperature 0.7-1.0); chosen = a correct, parsed answer, rejected = a wrong or unparsed one;
   at most M pairs per question; a pair is skipped when the chosen text occurs inside the
   rejected one (the rejected would contain the right answer). Optional DropoutNTP pairs: the
   first half of a chosen answer's words, continued by the model without the image, is the rejected.
   With --data (trainers/formats.py), preference rows (MMPR, TRL prompt/chosen/rejected) are
   pairs as given, not sampled; with dropout_ntp=true their chosen (and a conversation row's
   reply) also seed DropoutNTP pairs.
2. Loss = w_dpo * DPO (sigmoid) + w_bco * BCO + w_sft * SFT (token-mean NLL of the chosen),
   0.8 / 0.2 / 1.0 and beta 0.1 by default.

What TRL lacks, written here: TRL 1.16's DPOTrainer has `loss_type=["sigmoid", "bco_pair", "sft"]`
with `loss_weights`, but its `bco_pair` is `-logsigmoid(r_c) - logsigmoid(-r_r)` with no reward
shift. BCO (Jung et al. 2024), which MPO uses, subtracts delta, a running mean of past rewards:
`-logsigmoid(r_c - delta) - logsigmoid(-(r_r - delta))`. `MPOTrainer` (a DPOTrainer subclass)
computes the three terms with `mpo_loss` and keeps delta in `RunningMean`, updated with each batch's
mean reward before use (as earlier TRL releases' bco_pair did). Everything else is TRL's: PEFT
wrapping, the reference = the base with the adapter disabled, fused log-prob head, optimiser.
From a warm-up adapter (--base ADAPTER: InternVL2-8B-MPO is MPO after SFT) the warm-up samples the
pairs and a copy of it trains; the reference is TRL's frozen copy of the warm-up, not the bare base.
"""
from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from trl import DPOTrainer

from harness.models.families import trim_right
from trainers.common import TrainConfig, require
from trainers.data import Example, Pair

if TYPE_CHECKING:
    from harness.models.backend import HFBackend
    from trainers.formats import Source


@dataclass
class MPOConfig(TrainConfig):
    """MPO settings (plus the shared TrainConfig fields)."""

    samples_per_question: int = field(default=4, metadata={"help": "K: answers sampled per training question"})
    temperature: float = field(default=0.9, metadata={"help": "sampling temperature, 0.7-1.0 as in MPO"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "sampling budget (None: the task's own)"})
    max_pairs_per_question: int = field(default=2, metadata={"help": "M: at most this many correctness pairs per question"})
    gold_chosen: bool = field(
        default=False,
        metadata={"help": "a question none of whose samples is right gets its reference reply (the train split's "
                          "rationale) as the chosen against its wrong samples, as SPIN / mDPO pair gold with "
                          "model outputs; off: such questions give no pair, as in MPO's sampled pairs"},
    )
    chosen_from: str = field(
        default="samples",
        metadata={"help": "samples: the chosen is a right sample (MPO's pairs); gold: the chosen is the reference reply "
                          "against each wrong sample (SPIN's pairing), so the SFT term trains on the same gold "
                          "rationales as sft"},
    )
    dropout_ntp: bool = field(default=False, metadata={"help": "also make DropoutNTP pairs (continuation without the image = rejected)"})
    sample_batch_size: int = field(default=32, metadata={"help": "prompts per sampling call"})
    beta: float = field(default=0.1, metadata={"help": "KL strength of the DPO and BCO terms"})
    dpo_weight: float = field(default=0.8, metadata={"help": "weight of the DPO (sigmoid) preference loss"})
    bco_weight: float = field(default=0.2, metadata={"help": "weight of the BCO quality loss"})
    sft_weight: float = field(default=1.0, metadata={"help": "weight of the SFT generation loss on the chosen"})
    learning_rate: float = field(default=5e-4, metadata={"help": "peak learning rate"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.micro_batches == 1, "micro_batches applies to SFT-style training; preference pairs train whole (set 1)")
        require(self.samples_per_question >= 2, "samples_per_question must be >= 2 (pairs need two samples)")
        require(0.7 <= self.temperature <= 1.0, "temperature must be in [0.7, 1.0] (MPO samples in that range)")
        require(0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]")
        require(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens must be >= 1 or null")
        require(self.max_pairs_per_question >= 1, "max_pairs_per_question must be >= 1")
        require(self.chosen_from in ("samples", "gold"), f"chosen_from must be samples or gold, not {self.chosen_from!r}")
        require(self.sample_batch_size >= 1, "sample_batch_size must be >= 1")
        require(self.beta > 0, "beta must be > 0")
        weights = (self.dpo_weight, self.bco_weight, self.sft_weight)
        require(min(weights) >= 0 and sum(weights) > 0, "loss weights must be >= 0 and not all 0")


# --- the loss --------------------------------------------------------------------------------------
class RunningMean:
    """Mean of all values seen so far (BCO's reward shift delta)."""

    def __init__(self) -> None:
        self.mean, self.count = 0.0, 0

    def update(self, value: float) -> float:
        self.count += 1
        self.mean += (value - self.mean) / self.count
        return self.mean


def mpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, chosen_nll: torch.Tensor, beta: float, delta: float,
             weights: tuple[float, float, float] = (0.8, 0.2, 1.0)) -> dict[str, torch.Tensor]:
    """MPO's three terms and their weighted sum, from sequence log-probs (summed over reply tokens).

    dpo = -log s(beta * ((c - c_ref) - (r - r_ref)))                  (Rafailov et al. 2023)
    bco = -log s(beta * (c - c_ref) - delta) - log s(-(beta * (r - r_ref) - delta))   (Jung et al. 2024)
    sft = `chosen_nll`, the mean negative log-likelihood per chosen token
    """
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    dpo = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    bco = (-F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))).mean()
    w_dpo, w_bco, w_sft = weights
    return {"loss": w_dpo * dpo + w_bco * bco + w_sft * chosen_nll, "dpo": dpo, "bco": bco, "sft": chosen_nll,
            "chosen_rewards": chosen_rewards.detach(), "rejected_rewards": rejected_rewards.detach()}


class PairDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer fed by `PairCollator`: the dataset holds pair indices, so TRL's text
    tokenisation step is skipped (the collator builds finished inputs with the eval code path)."""

    def _prepare_dataset(self, dataset, *args: Any, **kwargs: Any):
        return dataset


class MPOTrainer(PairDPOTrainer):
    """DPOTrainer with MPO's loss: DPO + BCO with its running reward shift + SFT on the chosen."""

    def __init__(self, *args: Any, weights: tuple[float, float, float] = (0.8, 0.2, 1.0), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mpo_weights = weights
        self.reward_shift = RunningMean()

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k != "completion_mask"}
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        mask = completion_mask[:, 1:]
        token_logps = outputs.log_probs[:, -mask.size(1):] * mask  # zero outside the replies
        chosen_logps, rejected_logps = token_logps.sum(1).chunk(2)
        ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(model, inputs)
        chosen_tokens, _ = token_logps.chunk(2)
        chosen_mask, _ = mask.chunk(2)
        chosen_nll = -chosen_tokens.sum() / chosen_mask.sum().clamp(min=1)
        with torch.no_grad():
            batch_reward = torch.cat([self.beta * (chosen_logps - ref_chosen_logps),
                                      self.beta * (rejected_logps - ref_rejected_logps)]).mean()
        delta = self.reward_shift.update(float(batch_reward)) if model.training else self.reward_shift.mean
        terms = mpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_nll,
                         self.beta, delta, self.mpo_weights)
        metrics = self._metrics[mode]
        for name in ("dpo", "bco", "sft"):
            metrics[f"loss/{name}"].append(float(terms[name].detach()))
        metrics["bco_delta"].append(delta)
        metrics["rewards/chosen"].append(float(terms["chosen_rewards"].mean()))
        metrics["rewards/rejected"].append(float(terms["rejected_rewards"].mean()))
        metrics["rewards/accuracies"].append(float((terms["chosen_rewards"] > terms["rejected_rewards"]).float().mean()))
        return (terms["loss"], outputs) if return_outputs else terms["loss"]


# --- pairs ---------------------------------------------------------------------------------------
def pair_stats() -> dict[str, int]:
    """The counters `correctness_pairs` reports (all zero when nothing was sampled)."""
    return dict.fromkeys(("questions_with_pairs", "skipped_substring", "all_correct", "all_wrong", "gold_chosen"), 0)


def correctness_pairs(examples: Sequence[Example], samples: Sequence[Sequence[str]],
                      max_pairs: int, rng: random.Random, gold_chosen: bool = False,
                      chosen_from: str = "samples") -> tuple[list[Pair], dict[str, int]]:
    """Chosen = a correct, parsed sample; rejected = a wrong or unparsed one; <= max_pairs each.
    gold_chosen: a question with no correct sample takes its reference reply as the one chosen.
    chosen_from="gold": every question's reference reply is the chosen against its wrong samples."""
    pairs: list[Pair] = []
    stats = pair_stats()
    for index, (ex, outs) in enumerate(zip(examples, samples)):
        good: list[str] = []
        bad: list[str] = []
        for out in dict.fromkeys(o.strip() for o in outs if o.strip()):  # unique, in sample order
            extracted = ex.task.extract(out, ex.item)
            ok = extracted is not None and ex.task.score(extracted, ex.item) >= 1.0
            (good if ok else bad).append(out)
        if not bad:
            stats["all_correct"] += bool(good)
        if not good:
            stats["all_wrong"] += 1
        gold = ex.target.strip()
        if gold and bad and (chosen_from == "gold" or (gold_chosen and not good)):
            good = [gold]
            stats["gold_chosen"] += 1
        elif chosen_from == "gold":
            good = []  # no wrong sample (or no reference): a right sample is never the chosen here
        combos = []
        for c in good:
            for r in bad:
                if c in r:
                    stats["skipped_substring"] += 1
                else:
                    combos.append(Pair(index, c, r, "correctness"))
        rng.shuffle(combos)
        pairs += combos[:max_pairs]
        stats["questions_with_pairs"] += bool(combos)
    return pairs, stats


def dropout_ntp_pairs(backend: "HFBackend", examples: Sequence[Example], pairs: Sequence[Pair],
                      gen, batch_size: int) -> list[Pair]:
    """One DropoutNTP pair per question with a chosen answer: keep the first half of its words,
    let the model continue with no image; prefix + continuation is the rejected."""
    chosen_by_question: dict[int, str] = {}
    for p in pairs:
        chosen_by_question.setdefault(p.index, p.chosen)
    jobs = [(i, c, " ".join(c.split()[: len(c.split()) // 2])) for i, c in chosen_by_question.items()]
    jobs = [j for j in jobs if j[2]]  # a one-word answer has no half to keep
    out: list[Pair] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        conts = continue_reply(backend, [examples[i].text for i, _, _ in chunk], [h for _, _, h in chunk], gen)
        for (i, chosen, half), cont in zip(chunk, conts):
            rejected = (half + cont).strip()
            if rejected and rejected != chosen and chosen not in rejected:
                out.append(Pair(i, chosen, rejected, "dropout_ntp"))
    return out


def continue_reply(backend: "HFBackend", texts: Sequence[str], prefixes: Sequence[str], gen) -> list[str]:
    """The model's continuation of each reply `prefix` to a text-only prompt (no image).

    HFBackend has no "continue a reply" call, so the reply is built as a training target and the
    template's end-of-turn tokens (the last tokens of every left-padded row) are cut off.
    """
    inputs = backend.batch_inputs(list(texts), [[] for _ in texts], list(prefixes))
    inputs.pop("labels")
    suffix = backend.tokenizer(backend.reply_suffix, add_special_tokens=False)["input_ids"]
    if suffix:
        tail = torch.tensor(suffix, device=inputs["input_ids"].device)
        if not bool((inputs["input_ids"][:, -len(suffix):] == tail).all()):
            raise RuntimeError("reply suffix tokens not where expected; cannot continue replies")
        inputs = trim_right(inputs, len(suffix))
    torch.manual_seed(gen.seed)
    with torch.inference_mode():
        out = backend.model.generate(**inputs, generation_config=backend.generation_config(gen, 1))
    new = out[:, inputs["input_ids"].shape[1]:]
    return backend.tokenizer.batch_decode(new, skip_special_tokens=True)


# --- the treatment ---------------------------------------------------------------------------------


def run(cfg: MPOConfig, base: str, tasks: str, out: Path, data_dir: str | Path | None = None,
        overwrite: bool = False, progress: bool = True, device: str | None = None,
        sources: Sequence["Source"] = ()) -> dict[str, Any]:
    """Sample, build pairs, train a LoRA adapter with MPO on the train split of `tasks` (a name or
    comma-separated names), write `out` + manifest.json."""
    from trl import DPOConfig

    from harness.errors import HarnessError
    from harness.core.parallel import computed_on_main
    from trainers.common import (load_base, lora_config, prepare_trainer, quiet_libraries, sampling_progress,
        save_adapter, staged_output, train_metrics, trainable_start, trl_args, write_manifest)
    from trainers.data import PairCollator, given_pairs, index_dataset, load_train_data
    from trainers.replay import replay_for, replay_pairs
    from trainers.sampling import sample_answers, sampling_gen

    quiet_libraries()
    examples, data = load_train_data(tasks, data_dir, cfg.limit, sources=sources)
    # Task questions get self-sampled correctness pairs; data files' preference rows bring their own pairs.
    sampled = [i for i, e in enumerate(examples) if e.task is not None]
    given = given_pairs(examples)
    # replay: the other tasks' train items as gold pairs (never sampled), so their formats are kept
    replayed = replay_for(data, len(sampled), cfg, data_dir)
    given += replay_pairs(replayed, len(examples), cfg.seed)
    examples = examples + replayed
    if len(sampled) + len(given) == 0 and not cfg.dropout_ntp:
        raise HarnessError("mpo: the --data files hold no preference pairs (prompt/chosen/rejected rows); give "
                           "preference data, add --task, set dropout_ntp=true, or train them with sft")
    t0 = time.time()
    with staged_output(Path(out), overwrite) as stage:
        # From an adapter (MPO's order: the preference stage after SFT) its own samples make the pairs,
        # then a copy of it trains against a frozen copy as the reference, as in self_critique.
        backend, base_name = load_base(base, cfg.qlora, device, start_from_adapter="mpo")
        asked = [examples[i] for i in sampled]
        gen = sampling_gen(cfg, asked)

        def build_pairs():
            samples: list[list[str]] = []
            pairs: list[Pair] = []
            stats = pair_stats()
            if asked:
                with sampling_progress(progress, f"mpo sampling {data['task']}", len(asked)) as advance:
                    samples = sample_answers(backend, asked, cfg.samples_per_question, gen, cfg.sample_batch_size,
                                             advance)
                pairs, stats = correctness_pairs(asked, samples, cfg.max_pairs_per_question, random.Random(cfg.seed),
                                                 cfg.gold_chosen, cfg.chosen_from)
                pairs = [replace(p, index=sampled[p.index]) for p in pairs]
            stats["given_pairs"] = len(given)  # replay pairs included (data["replay"] counts them)
            pairs += given
            if cfg.dropout_ntp:
                # a data file's conversation row seeds DropoutNTP with its reference reply
                seeds = pairs + [Pair(i, e.target, "", "reference") for i, e in enumerate(examples)
                                 if e.task is None and e.rejected is None]
                ntp = dropout_ntp_pairs(backend, examples, seeds, gen, cfg.sample_batch_size)
                stats["dropout_ntp_pairs"] = len(ntp)
                pairs += ntp
            return samples, pairs, stats

        samples, pairs, stats = computed_on_main(build_pairs)  # every rank trains on rank 0's pairs
        sample_seconds = time.time() - t0
        if not pairs:
            raise HarnessError(
                f"mpo: no preference pairs from {len(asked)} questions x {cfg.samples_per_question} samples "
                f"({stats['all_correct']} all correct, {stats['all_wrong']} all wrong); "
                "raise samples_per_question or temperature, or train on more questions"
            )
        start = getattr(backend, "start_adapter", None)
        with tempfile.TemporaryDirectory() as work:
            args = trl_args(DPOConfig, cfg, Path(work), beta=cfg.beta, max_length=None)
            trainer = MPOTrainer(
                model=trainable_start(backend.model, start), args=args, train_dataset=index_dataset(len(pairs)),
                data_collator=PairCollator(backend, examples, pairs), processing_class=backend.tokenizer,
                peft_config=None if start else lora_config(cfg),
                weights=(cfg.dpo_weight, cfg.bco_weight, cfg.sft_weight),
            )
            prepare_trainer(trainer, progress, f"mpo {data['task']}")
            trainer.train()
        metrics = train_metrics(trainer)
        metrics.update(sample_seconds=round(sample_seconds, 1), wall_seconds=round(time.time() - t0, 1),
                       final_bco_delta=trainer.reward_shift.mean)
        save_adapter(trainer.model, stage, base_name)
        return write_manifest(
            stage, "mpo", cfg, base=base_name, base_hash=backend.content_hash,
            data={**data, "pairs": len(pairs), **stats, "sample_accuracy": _sample_accuracy(asked, samples)},
            metrics=metrics, start_adapter=start,
        )


def _sample_accuracy(examples: Sequence[Example], samples: Sequence[Sequence[str]]) -> float | None:
    if not examples:
        return None  # data files only: nothing was sampled
    scores = [e.task.score(e.task.extract(o, e.item), e.item) for e, outs in zip(examples, samples) for o in outs]
    return round(sum(scores) / max(1, len(scores)), 4)
