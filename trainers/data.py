"""Training data every treatment shares: examples in the exact eval prompt format, preference
pairs, and the collators that turn dataset row indices into model inputs.

Inputs are built by `HFBackend.batch_inputs` (the same code evaluation uses), so a model is
trained on the prompt, image tokens and reply format it is scored with. TRL's own collators are not
used: they need a transformers `ProcessorMixin`, which the embedded tiny models (and Qwen2-VL
without torchvision) do not have, so TRL receives the tokenizer as `processing_class` and
our collators hand it finished tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.models.backend import HFBackend
    from harness.core.task import Task
    from harness.core.types import Item

TARGETS = ("cot", "answer")


@dataclass
class Example:
    """One training question: the eval prompt, its opened images and the reference reply."""

    item: "Item"
    text: str
    images: list  # PIL images, opened once
    target: str
    task: "Task"  # extracts and scores this item's answers (MPO's correctness pairs)


def load_examples(task: "Task", data_dir: Path, limit: int | None = None, target: str = "cot",
                  split: str = "train") -> list[Example]:
    """A task's `split` items as training examples (prompt = task.prompt, reply = task.target_text).

    target="answer" keeps only the final "Answer: ..." part of a chain-of-thought target.
    """
    from harness.core.images import open_image
    from harness.core.runner import check_images

    if target not in TARGETS:
        raise HarnessError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    items = task.load(data_dir, split)  # type: ignore[arg-type]
    items = items[:limit] if limit else items
    if not items:
        raise HarnessError(f"{task.name}: the {split} split is empty; check --data-dir")
    check_images(task, items)
    opened: dict[Any, Any] = {}
    out = []
    for it in items:
        try:
            reply = task.target_text(it)
        except NotImplementedError:
            raise HarnessError(f"task {task.name} defines no training target (target_text); pick another task") from None
        if target == "answer":
            at = reply.rfind("Answer:")
            reply = reply[at:] if at >= 0 else reply
        imgs = []
        for ref in it.images:
            key = ref if isinstance(ref, bytes) else str(ref)
            if key not in opened:
                opened[key] = open_image(ref)
            imgs.append(opened[key])
        out.append(Example(it, task.prompt(it), imgs, reply, task))
    return out


def task_names(spec: str) -> list[str]:
    """`geoqa` or `geoqa,aokvqa_mc` -> the task names, checked to exist."""
    from harness.core.task import get_task

    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names:
        raise HarnessError("--task is empty; give a task name or a comma-separated list, e.g. geoqa,aokvqa_mc")
    if len(set(names)) != len(names):
        raise HarnessError(f"--task {spec} lists a task twice")
    for name in names:
        get_task(name)  # an unknown name is an error listing the known tasks
    return names


def load_train_data(spec: str, data_dir: str | Path | None, limit: int | None,
                    target: str = "cot") -> tuple[list[Example], dict[str, Any]]:
    """Training examples of one or more tasks (the first `limit` train items of each) and the
    manifest's description of them."""
    from harness.core.task import get_task, resolve_data_dir

    root = resolve_data_dir(data_dir)
    examples: list[Example] = []
    per_task = {}
    for name in task_names(spec):
        loaded = load_examples(get_task(name), root, limit, target)
        per_task[name] = len(loaded)
        examples += loaded
    data = {"task": ",".join(per_task), "split": "train", "dir": str(root), "n": len(examples),
            "n_per_task": per_task, "hash": examples_hash(examples)}
    return examples, data


def examples_hash(examples: Sequence[Example]) -> str:
    from harness.core.scoring import data_hash

    return data_hash(e.item for e in examples)


@dataclass(frozen=True)
class Pair:
    """A preference pair for the question examples[index]."""

    index: int
    chosen: str
    rejected: str
    kind: str = "correctness"  # how it was made: correctness | dropout_ntp | critique


class SFTCollator:
    """Dataset rows {"idx": i} -> model inputs with labels on the reply tokens only."""

    def __init__(self, backend: "HFBackend", examples: Sequence[Example]) -> None:
        self.backend, self.examples = backend, examples

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = [self.examples[r["idx"]] for r in rows]
        return self.backend.batch_inputs([e.text for e in batch], [e.images for e in batch], [e.target for e in batch])


class PairCollator:
    """Dataset rows {"idx": i} -> TRL's preference batch: chosen rows, then rejected rows, with
    `completion_mask` marking the reply tokens (TRL scores exactly those)."""

    def __init__(self, backend: "HFBackend", examples: Sequence[Example], pairs: Sequence[Pair]) -> None:
        self.backend, self.examples, self.pairs = backend, examples, pairs

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from harness.models.backend import IGNORE_INDEX

        pairs = [self.pairs[r["idx"]] for r in rows]
        ex = [self.examples[p.index] for p in pairs]
        batch = self.backend.batch_inputs(
            [e.text for e in ex] * 2, [e.images for e in ex] * 2,
            [p.chosen for p in pairs] + [p.rejected for p in pairs],
        )
        batch["completion_mask"] = (batch.pop("labels") != IGNORE_INDEX).long()
        return batch


def index_dataset(n: int):
    """A `datasets.Dataset` of row indices: TRL's trainers want a Dataset; the collators hold the data."""
    from datasets import Dataset

    return Dataset.from_dict({"idx": list(range(n))})
