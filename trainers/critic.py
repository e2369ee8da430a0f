"""`critic`: train a judge, LLaVA-Critic style (Xiong et al. 2024), on pairwise verdicts and pointwise
scores (TRL's SFTTrainer through `trainers.sft.fit_lora_sft`).

    harness train critic --base tiny --task critic --out checkpoints/built/critic
    harness eval --ckpt A --tasks critic --judge checkpoints/built/critic
    harness critic agreement --judge checkpoints/built/critic

Data: the critic task's train split (`critic/questions_train.json` + `critic/judgements_train.jsonl`,
written by `make data`; tasks/synth/critic.py): per question, candidate answers of known quality
(right, partly right, wrong, malformed) with a 0-100 score and a reason, and pairwise verdicts with a
reason. Each becomes one training example in exactly the prompt the harness judge sends
(`harness.judge.pipeline.pairwise_prompt` / `pointwise_prompt`), with the image, and the reply the
judge should give: the verdict (or the score) first, then the reason, which is what the judge's
parser reads. With `swap=true` every pairwise verdict is also shown in the other order (verdict
swapped), so the judge cannot learn a position preference. The critic task's test questions are
never read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError
from trainers.common import TrainConfig, require

if TYPE_CHECKING:
    from trainers.data import Example
    from trainers.formats import Source

JUDGEMENTS = "judgements_train.jsonl"
KINDS = ("pairwise", "pointwise")
_SWAP = {"Answer1": "Answer2", "Answer2": "Answer1"}


@dataclass
class CriticConfig(TrainConfig):
    """Judge-training settings (plus the shared TrainConfig fields)."""

    kinds: str = field(default="pairwise,pointwise", metadata={"help": "which judgements to train on: pairwise, pointwise or both (comma-separated)"})
    swap: bool = field(default=True, metadata={"help": "also train every pairwise verdict with the answers in the other order"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the judgements"})
    reasons: bool = field(default=True, metadata={"help": "follow each verdict or score with its reason; false trains "
                                                           "the decision alone (every gradient on the verdict token)"})
    answer_first: bool = field(default=False, metadata={"help": "pairwise replies open with the judge's own answer to the "
                                                                 "question (the reference), then the verdict: the verdict "
                                                                 "then compares two texts with its own reading of the image"})
    answers: bool = field(default=False, metadata={"help": "also learn to answer each critic train question (its "
                                                             "reference), so the judge knows what a right answer says"})

    def __post_init__(self) -> None:
        super().__post_init__()
        chosen = [k.strip() for k in self.kinds.split(",") if k.strip()]
        require(bool(chosen) and all(k in KINDS for k in chosen), f"kinds must name one or both of {', '.join(KINDS)}")


def judge_examples(data_dir: str | Path | None, cfg: CriticConfig) -> tuple[list["Example"], dict[str, Any]]:
    """The critic train split's judgements as training examples (prompt -> verdict or score, then the reason)."""
    from harness.core.files import read_jsonl
    from harness.core.images import open_image
    from harness.core.task import get_task, resolve_data_dir
    from harness.judge.pipeline import pairwise_prompt, pointwise_prompt
    from trainers.data import Example

    root = resolve_data_dir(data_dir)
    task = get_task("critic")
    items = {it.id: it for it in task.load(root, "train")}
    path = Path(task_root(root)) / JUDGEMENTS
    if not path.is_file():
        raise HarnessError(f"critic: {path} not found; `make data` writes the critic train split's judgements")
    kinds = {k.strip() for k in cfg.kinds.split(",")}
    opened: dict[str, Any] = {}
    out: list[Example] = []
    counts: dict[str, int] = {"pairwise": 0, "pointwise": 0}
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path} line {n}"
        if not isinstance(row, dict) or row.get("kind") not in KINDS or str(row.get("id")) not in items:
            raise HarnessError(f"{where}: needs kind (pairwise/pointwise) and the id of a train question")
        if row["kind"] not in kinds:
            continue
        item = items[str(row["id"])]
        ref = str(item.images[0])
        if ref not in opened:
            opened[ref] = open_image(item.images[0])
        reason = str(row.get("reason", "")).strip() if cfg.reasons else ""
        try:
            if row["kind"] == "pointwise":
                shown = [(pointwise_prompt(item.question, row["answer"]), _reply(str(int(row["score"])), reason))]
            else:
                verdict = row["verdict"]
                lead = f"{task.target_text(item)} " if cfg.answer_first else ""
                shown = [(pairwise_prompt(item.question, row["answer1"], row["answer2"]), lead + _reply(verdict, reason))]
                if cfg.swap:  # the same judgement, answers swapped (the reason's slot names swap too)
                    swapped = reason.replace("Answer1", "\0").replace("Answer2", "Answer1").replace("\0", "Answer2")
                    shown.append((pairwise_prompt(item.question, row["answer2"], row["answer1"]),
                                  lead + _reply(_SWAP[verdict], swapped)))
        except (KeyError, TypeError, ValueError):
            raise HarnessError(f"{where}: a {row['kind']} judgement needs "
                               f"{'answer, score' if row['kind'] == 'pointwise' else 'answer1, answer2, verdict'}") from None
        for text, target in shown:
            out.append(Example(item, text, [opened[ref]], target, None))
            counts[row["kind"]] += 1
    if not out:
        raise HarnessError(f"critic: {path} holds no {cfg.kinds} judgements")
    if cfg.answers:  # the task's own prompt -> its reference: answering comes before judging answers
        for item in items.values():
            ref = str(item.images[0])
            if ref not in opened:
                opened[ref] = open_image(item.images[0])
            out.append(Example(item, task.prompt(item), [opened[ref]], task.target_text(item), None))
        counts["answers"] = len(items)
    return out, {"task": "critic", "judgements": str(path), "examples": counts, "questions": len(items)}


def _reply(decision: str, reason: str) -> str:
    return f"{decision}. {reason}" if reason else f"{decision}."


def task_root(root: Path) -> Path:
    from tasks.critic import _root

    return _root(root)


def run(cfg: CriticConfig, base: str, tasks: str, out: Path, data_dir: str | Path | None = None,
        overwrite: bool = False, progress: bool = True, device: str | None = None,
        sources: Sequence["Source"] = ()) -> dict[str, Any]:
    """Train a LoRA judge on the critic train split's judgements; writes `out` (adapter + manifest)."""
    from trainers.common import load_base, quiet_libraries, save_adapter, staged_output, train_metrics, write_manifest
    from trainers.sft import fit_lora_sft

    if tasks.strip() != "critic":
        raise HarnessError(f"the critic treatment trains on the critic task's judgements; pass --task critic, not {tasks!r}")
    if sources:
        raise HarnessError("the critic treatment takes no --data files; it reads critic/judgements_train.jsonl")
    quiet_libraries()
    from trainers.replay import with_replay

    examples, data = judge_examples(data_dir, cfg)
    examples = with_replay(examples, data, cfg, data_dir)  # the judge keeps answering the tasks
    t0 = time.time()
    with staged_output(Path(out), overwrite) as stage:
        backend, base_name = load_base(base, cfg.qlora, device)
        trainer = fit_lora_sft(backend, backend.model, examples, cfg, progress, "critic judge")
        metrics = train_metrics(trainer)
        metrics["wall_seconds"] = round(time.time() - t0, 1)
        save_adapter(trainer.model, stage, base_name)
        return write_manifest(stage, "critic", cfg, base=base_name, base_hash=backend.content_hash, data=data,
                              metrics=metrics)
