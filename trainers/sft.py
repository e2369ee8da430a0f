"""`sft`: supervised fine-tuning of a LoRA adapter (or every weight) on a task's train split (TRL's SFTTrainer).

    harness train sft --base tiny --task geoqa --out checkpoints/built/sft [lora_r=8 epochs=2 ...]
    harness train sft --base tiny --task ocrbench --out ckpts/sft-full full_finetune=true learning_rate=1e-3
    harness train sft --base tiny --task geoqa,aokvqa_mc,mmbench --out ckpts/sft-mix limit=200
    harness train sft --base tiny --data my/llava.json,mmpr/meta.json:0.5 --out ckpts/sft-mine

With --data (trainers/formats.py) a data file's conversation is one sequence with labels on every
assistant turn (`trainers.data.encode_conversation`); a preference row trains on its chosen reply.

The loss is the mean negative log-likelihood of the assistant reply only (prompt, image and
padding tokens carry label -100): `SFTCollator` builds each example with `HFBackend.batch_inputs`,
the eval code path, so training sees the exact eval prompt and `task.target_text` as the reply
(target=cot: the task's chain-of-thought target; target=answer: only its final "Answer: ..." part).
TRL does the rest: PEFT wrapping, the fused LM-head loss, the optimiser and schedule. With
qlora=true the base is loaded in 4 bit (bitsandbytes, CUDA only; a clear error elsewhere). With
full_finetune=true every weight of the base trains (TRL without a peft_config) and `out` is a full
checkpoint (weights, tokenizer and processor: a model folder, not an adapter); started from an adapter
(a warm-up) the adapter is merged into the weights first.

With select_replay=S the base first samples `select_samples` replies to a share S of the task's
questions and each question with a right and a wrong reply becomes one R3V select item over them
(with select_gold, the default, the reference rationale stands in where no reply is right)
(trainers/replay.py `select_replay`): a warm-up that trains only rationales would otherwise erase
the base's selection format (README "The embedded default").
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from trainers.common import TrainConfig, require
from trainers.data import TARGETS

if TYPE_CHECKING:
    from trainers.formats import Source


@dataclass
class SFTConfig(TrainConfig):
    """SFT settings (plus the shared TrainConfig fields)."""

    target: str = field(default="cot", metadata={"help": "reply to learn: 'cot' (task target_text) or 'answer' (its 'Answer: ...' part)"})
    full_finetune: bool = field(
        default=False,
        metadata={"help": "train every weight of the base instead of a LoRA adapter (lora_* unused); writes a full checkpoint"},
    )

    select_replay: float = field(
        default=0.0,
        metadata={"help": "sample this share of the task's questions from the base and train one select item "
                          "(R3V's prompt over its own replies) per question with a right and a wrong reply (0: none)"},
    )
    select_samples: int = field(default=4, metadata={"help": "replies the base samples per select_replay question"})
    select_candidates: str = field(default="2..10", metadata={"help": "candidates per select_replay item: 'LO..HI', drawn uniformly"})
    select_target: str = field(default="answer", metadata={"help": "a select_replay item's reply: 'answer' (the right "
                                                              "reply's final answer) or 'rationale' (that reply restated whole)"})
    select_temperature: float = field(default=1.0, metadata={"help": "temperature of the select_replay samples, in (0, 2]"})
    select_gold: bool = field(default=True, metadata={"help": "a select_replay question none of the base's replies solves "
                                                              "gets its reference rationale as the right candidate (false: skipped)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from trainers.self_items import check_candidates, check_select_target

        require(0.0 <= self.select_replay <= 1.0, "select_replay must be in [0, 1] (a share of the task's questions)")
        require(self.select_samples >= 2, "select_samples must be >= 2 (a select item needs a right and a wrong reply)")
        check_candidates(self.select_candidates)
        check_select_target(self.select_target)
        require(0.0 < self.select_temperature <= 2.0, "select_temperature must be in (0, 2]")
        require(self.target in TARGETS, f"target must be one of {', '.join(TARGETS)}")
        require(not (self.full_finetune and self.qlora),
                "full_finetune=true trains every weight and 4-bit weights cannot be trained; set qlora=false")


def run(cfg: SFTConfig, base: str, tasks: str, out: Path, data_dir: str | Path | None = None,
        overwrite: bool = False, progress: bool = True, device: str | None = None,
        sources: Sequence[Source] = ()) -> dict[str, Any]:
    """Train on the train split of `tasks` (a name or comma-separated names), then write `out`
    (a PEFT adapter, or with full_finetune a full checkpoint, + manifest.json). Returns the manifest."""
    from trainers.common import load_base, quiet_libraries, save_trained, staged_output, train_metrics, write_manifest
    from trainers.data import load_train_data

    quiet_libraries()
    from trainers.replay import select_replay, with_replay

    examples, data = load_train_data(tasks, data_dir, cfg.limit, cfg.target, sources)
    asked = examples
    examples = with_replay(examples, data, cfg, data_dir)
    t0 = time.time()
    with staged_output(Path(out), overwrite) as stage:
        backend, base_name = load_base(base, cfg.qlora, device, start_from_adapter="sft",
                                       dtype="float32" if cfg.full_finetune else None)
        examples = examples + select_replay(backend, asked, data, cfg, progress)
        trainer = fit_lora_sft(backend, backend.model, examples, cfg, progress, f"sft {data['task']}")
        metrics = train_metrics(trainer)
        metrics["wall_seconds"] = round(time.time() - t0, 1)
        save_trained(trainer.model, stage, base_name, backend)
        return write_manifest(
            stage, "sft", cfg, base=base_name, base_hash=backend.content_hash, data=data, metrics=metrics,
            start_adapter=getattr(backend, "start_adapter", None),
        )


def fit_lora_sft(backend: Any, model: Any, examples: list, cfg: TrainConfig, progress: bool, label: str, *,
                 new_adapter: bool = True, collator: Any = None, trainer_cls: type | None = None,
                 **trainer_kwargs: Any):
    """TRL SFTTrainer over `examples` (reply-only loss via SFTCollator unless `collator` is given):
    a new LoRA on `model` (a trainable copy of `backend.start_adapter` when training starts from an
    adapter, see trainers.common.load_base), or (new_adapter=False) further training of the adapter
    `model` carries. With `cfg.full_finetune` (SFTConfig) every weight of `model` trains instead, an
    adapter it carries merged in first.
    The shared loop of sft, remgcl, self_train and data_engine; returns the trained trainer."""
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from trainers.common import lora_config, prepare_trainer, seeded_rebalance, trainable_start, trl_args
    from trainers.data import SFTCollator, index_dataset, row_lengths

    start = getattr(backend, "start_adapter", None)
    if getattr(cfg, "full_finetune", False):
        from peft import PeftModel

        if isinstance(model, PeftModel):  # a warm-up adapter becomes part of the weights that train
            model = model.merge_and_unload()
        model.requires_grad_(True)
        new_adapter = False
    elif new_adapter and start is not None:  # a fresh copy of the warm-up adapter, trainable
        model, new_adapter = trainable_start(model, start), False
    with tempfile.TemporaryDirectory() as work:
        args = trl_args(TRLSFTConfig, cfg, Path(work), dataset_kwargs={"skip_prepare_dataset": True})
        lengths = row_lengths(backend, examples) if cfg.micro_batches > 1 else None
        trainer = seeded_rebalance(trainer_cls or SFTTrainer)(
            model=model, args=args, train_dataset=index_dataset(len(examples), lengths),
            data_collator=collator or SFTCollator(backend, examples), processing_class=backend.tokenizer,
            peft_config=lora_config(cfg) if new_adapter else None, **trainer_kwargs,
        )
        prepare_trainer(trainer, progress, label)
        trainer.train()
    return trainer
