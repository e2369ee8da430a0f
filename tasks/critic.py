"""Critic: open-ended questions about images, each answer scored by a judge model.

Data: the MLLM-Bench layout (Ge et al. 2024, "MLLM-Bench: Evaluating Multimodal LLMs with
Per-sample Criteria"): `critic/questions.json`, a list of {id, image_path, question, meta: {level,
capability, "question type"}}, images under `critic/images/` by the file name of `image_path`
(the release writes "./data/images/0.jpeg"). A release unpacked one folder down
(`critic/mllm_bench/`) is found too. The bundled synthetic set (tasks/synth/critic.py) adds a
`reference` answer per question: the training target; the judge never sees it.

Scoring is not done here. The checkpoint's answers are an ordinary generation run
(samples.jsonl); harness/judge/ then has a judge checkpoint score each answer 0-100
(pointwise, LLaVA-Critic style) or compare it with another checkpoint's answer (`--vs`), and
writes the judged score to judged.json beside the run's summary.json. `score()` below only
records whether an answer was given at all (the score summary.json holds: the share answered).

    harness eval --ckpt tiny --tasks critic --judge tiny [--vs OTHER]
    harness eval --ckpt tiny --tasks critic --data-dir ../shared/data/real --questions with_images
    harness critic agreement --judge tiny --votes critic/mllm_bench/pairwise_votes_gpt4v_subset.json

`read_votes` reads MLLM-Bench's vote files (GPT-4V's verdicts on two models' answers, each
question shown in both orders) as reference verdicts for `harness critic agreement`.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.judge.pipeline import Comparison, Verdict
from harness.core.task import Split, Task, read_json, require_file
from harness.core.types import Item

_FILES = {"test": "questions.json", "train": "questions_train.json"}
_QUESTION_BLOCK = re.compile(r"~~~Question\n(.*?)\n~~~", re.DOTALL)  # MLLM-Bench's judge prompt


def _root(data_dir: Path) -> Path:
    root = Path(data_dir) / "critic"
    if not (root / "questions.json").is_file() and (root / "mllm_bench" / "questions.json").is_file():
        return root / "mllm_bench"
    return root


def _image_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HarnessError(f"{where}: needs a string 'image_path' (e.g. './data/images/0.jpeg')")
    name = PurePosixPath(value.replace("\\", "/")).name
    if name in ("", ".", ".."):
        raise HarnessError(f"{where}: image_path {value!r} names no file")
    return name


class Critic(Task):
    """Open-ended image questions; the critic score is a judge's 0-100 rating (see harness.judge)."""

    name = "critic"
    description = "open-ended image questions scored 0-100 by a judge model (--judge, --vs); MLLM-Bench layout"
    data_layout = "critic/questions.json, critic/images/<file> (or critic/mllm_bench/...)"
    options = {"questions": ("all", "with_images")}
    option_help = {"questions": "which questions (with_images skips questions whose image is absent)"}
    synth, synth_sizes, synth_dirs = "tasks.synth.critic", (60, 300), ("critic",)
    request_type = "generate"
    max_new_tokens = 64
    judged: ClassVar[bool] = True  # scores come from harness.judge, not from score()

    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        root = _root(data_dir)
        path = require_file(root / _FILES[split], self.name,
                            "expected the MLLM-Bench layout critic/questions.json + critic/images/")
        rows = read_json(path)
        if not isinstance(rows, list):
            raise HarnessError(f"{path}: expected a JSON list of questions")
        items: list[Item] = []
        seen: set[str] = set()
        for n, row in enumerate(rows):
            where = f"{path} (entry {n})"
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("question"), str):
                raise HarnessError(f"{where}: each question needs 'id', 'image_path' and a string 'question'")
            qid = str(row["id"])
            if qid in seen:
                raise HarnessError(f"{where}: duplicate id {qid}; ids must be unique")
            seen.add(qid)
            meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
            reference = row.get("reference")
            items.append(Item(
                id=qid, question=row["question"].strip(), target=reference if isinstance(reference, str) else "",
                images=(root / "images" / _image_name(row.get("image_path"), where),),
                category=str(meta.get("level", "")),
                metadata={"capability": meta.get("capability", ""), "question_type": meta.get("question type", "")},
            ))
        return self._present(items, root)

    def _present(self, items: list[Item], root: Path) -> list[Item]:
        """All questions, or only those whose image is there (--questions with_images), said aloud."""
        missing = [it for it in items if not Path(it.images[0]).is_file()]
        if not missing:
            return items
        if self.opts["questions"] == "with_images":
            kept = [it for it in items if Path(it.images[0]).is_file()]
            if not kept:
                raise HarnessError(f"critic: none of the {len(items)} question images is under {root / 'images'}")
            return kept
        raise HarnessError(
            f"critic: {len(missing)} of {len(items)} question images are missing under {root / 'images'} "
            f"(e.g. {Path(missing[0].images[0]).name}); add them, or pass --questions with_images to "
            "evaluate only the questions whose image is present"
        )

    def prompt(self, item: Item) -> str:
        return item.question

    def extract(self, output: str, item: Item) -> str | None:
        answer = output.strip()
        return answer or None

    def score(self, extracted: str | None, item: Item) -> float:
        # Answered or not; the critic score itself is the judge's (harness.judge writes judged.json).
        return 1.0 if extracted else 0.0

    def target_text(self, item: Item) -> str:
        if not item.target:
            raise HarnessError(f"critic: question {item.id} has no reference answer to train on")
        return str(item.target)


# --- MLLM-Bench vote files --------------------------------------------------------------------
def _reference(row: dict[str, Any], where: str) -> Verdict:
    """GPT-4V's slot verdict: 'Answer1' / 'Answer2' / 'unable to decide: ...' (or 'tie')."""
    answer = row.get("answer")
    if not isinstance(answer, str) and isinstance(row.get("vote"), str):
        vote = row["vote"]  # a model name, or "unable to decide"
        answer = "Answer1" if vote == row.get("model_1") else "Answer2" if vote == row.get("model_2") else vote
    text = str(answer or "").strip().lower().replace(" ", "")
    if text in ("answer1", "1"):
        return "1"
    if text in ("answer2", "2"):
        return "2"
    if text.startswith("unabletodecide") or text in ("tie", "equal"):
        return "tie"
    raise HarnessError(f"{where}: verdict {answer!r} is not Answer1, Answer2 or 'unable to decide'")


def read_votes(path: Path) -> list[Comparison]:
    """MLLM-Bench pairwise votes -> Comparisons; images are resolved beside the votes file."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"votes file not found: {path}; pass --votes pointing at e.g. pairwise_votes_gpt4v_subset.json")
    rows = read_json(path)
    if not isinstance(rows, list) or not rows:
        raise HarnessError(f"{path}: expected a non-empty JSON list of votes")
    out: list[Comparison] = []
    for n, row in enumerate(rows):
        where = f"{path} (entry {n})"
        if not isinstance(row, dict):
            raise HarnessError(f"{where}: expected an object")
        need = [k for k in ("unique_idx", "image", "raw_answer1", "raw_answer2") if not isinstance(row.get(k), str)]
        if need:
            raise HarnessError(f"{where}: missing string field(s) {', '.join(need)}")
        question = row.get("question")
        if not isinstance(question, str):
            m = _QUESTION_BLOCK.search(str(row.get("prompt", "")))
            if m is None:
                raise HarnessError(f"{where}: no 'question' field and no '~~~Question' block in 'prompt'")
            question = m.group(1)
        rel = PurePosixPath(row["image"].replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise HarnessError(f"{where}: image path {row['image']!r} must be relative to the votes file's folder")
        image = path.parent / rel
        if not image.is_file():
            raise HarnessError(f"{where}: image not found: {image}; keep the images folder beside the votes file")
        out.append(Comparison(
            id=row["unique_idx"], cluster=row["unique_idx"].rsplit("_", 1)[0], question=question.strip(),
            images=(image,), answer1=row["raw_answer1"], answer2=row["raw_answer2"], reference=_reference(row, where),
            models=(str(row.get("model_1", "")), str(row.get("model_2", ""))),
        ))
    return out


# `harness critic agreement` reads votes through the task registry (the engine never imports tasks).
Critic.read_votes = staticmethod(read_votes)
