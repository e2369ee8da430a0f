"""MMBench (dev, English) with CircularEval (Liu et al., "MMBench: Is Your Multi-modal Model an
All-around Player?", ECCV 2024).

Data: the VLMEvalKit / LMUData TSV `mmbench/MMBench_DEV_EN.tsv` with columns index, question,
hint, A, B, C, D (E on some files; an empty cell means no option), answer, category, image
(base64 JPEG, or a short cell holding another row's index whose image it reuses), source,
l2-category, comment, split. The bundled train split is `mmbench/MMBench_TRAIN_EN.tsv`.

Circular evaluation: the copies of one question share g_index = index % 1_000_000 and hold the
same options rotated, so copy j of a k-option question lists option (i + j) % k at letter i. The
official dev file already holds the copies; a question found without them gets them built here.
A question scores 1 only when every copy is answered right; `vanilla` scores the index < 1e6 copy.

Reading the LMUData TSV, the prompt and the answer extraction are shared with the generic
`lmudata_mc` task (tasks/lmudata.py); this module adds the circular copies and CircularEval.
Answer extraction is a deterministic rule in the spirit of VLMEvalKit's `can_infer` (one option
letter, else one option text). It differs on purpose:
- no GPT judge and no random fallback: an output the rule cannot read is unparsed (scored 0),
  as VLMEvalKit's `exact_matching` mode does;
- "A" and "I" are English words, so they count as option letters only when marked as letters:
  "(A)", "A.", "A)", "A:", "A," , "option A", or at the end of the output. VLMEvalKit instead
  rejects any output longer than three tokens holding "A" (in current versions only when the
  VERBOSE variable is set, so in practice an article "A" is read as option A);
- an explicit "answer is X" / "answer: X" wins when several letters appear (the last one counts);
- option texts holding a standalone capital ("Solution A") are masked before letters are read,
  so the output "Solution A" picks the option with that text, not option A;
- option texts match on word boundaries, a text contained in a longer matched option yields to
  it ("red" vs "dark red"), and there is no output-length cap.

    harness eval --task mmbench [--data-dir D] ...
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.core.task import Split, Task, Unit, per_category, require_file
from harness.core.types import Item
from tasks.lmudata import COPY_STRIDE, extract_option, letters_of, mc_prompt, read_items
FILES = {"test": "MMBench_DEV_EN.tsv", "train": "MMBench_TRAIN_EN.tsv"}
# Column order of the real LMUData dev file (the bundled generator writes the same).
COLUMNS = (
    "index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
    "source", "l2-category", "comment", "split",
)


def rotate_options(texts: tuple[str, ...], answer_pos: int, shift: int) -> tuple[tuple[str, ...], int]:
    """Circular copy `shift` of a question: option (i + shift) % k moves to slot i."""
    k = len(texts)
    return tuple(texts[(i + shift) % k] for i in range(k)), (answer_pos - shift) % k


def build_circular_copies(base: Item) -> list[Item]:
    """Copies 1..k-1 of a question found without them (ids g + j * 1e6, same image and group)."""
    letters = base.metadata["letters"]
    g_index = base.metadata["g_index"]
    copies = []
    for shift in range(1, len(letters)):
        texts, pos = rotate_options(base.choices, letters.index(base.target), shift)
        index = g_index + shift * COPY_STRIDE
        copies.append(
            Item(
                id=str(index), question=base.question, target=letters[pos], choices=texts,
                images=base.images, category=base.category, group=base.group,
                metadata={**base.metadata, "index": index, "copy": shift, "built": True},
            )
        )
    return copies


def _with_copy_fields(item: Item) -> Item:
    """An LMUData row as an MMBench item: grouped with its circular copies by index % 1e6."""
    index = item.metadata["index"]
    g_index = index % COPY_STRIDE
    return replace(item, group=str(g_index),
                   metadata={**item.metadata, "g_index": g_index, "copy": index // COPY_STRIDE})


def load_tsv(path: Path) -> list[Item]:
    """Items of one MMBench TSV, with circular copies built for questions that lack them."""
    items = [_with_copy_fields(it) for it in read_items(path)]
    by_group: dict[int, list[Item]] = defaultdict(list)
    for it in items:
        by_group[it.metadata["g_index"]].append(it)
    out: list[Item] = []
    for g_index, members in by_group.items():
        base = next((it for it in members if it.metadata["copy"] == 0), None)
        if base is None:
            raise HarnessError(
                f"{path}: circular copy index {members[0].id} has no base row {g_index}; add it or drop the copies"
            )
        out.extend(members)
        if len(members) == 1:
            out.extend(build_circular_copies(base))
    return out


class MMBench(Task):
    name = "mmbench"
    description = "MMBench dev (EN): multiple choice over 20 abilities, CircularEval (all rotations right)"
    data_layout = "mmbench/MMBench_DEV_EN.tsv (LMUData TSV, base64 images inside; train: MMBench_TRAIN_EN.tsv)"
    request_type = "generate"
    max_new_tokens = 32
    synth, synth_sizes, synth_dirs = "tasks.synth.mmbench", (150, 300), ("mmbench",)
    lmu_tsv = True

    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        path = Path(data_dir) / "mmbench" / FILES[split]
        hint = (
            "the train split exists only in the bundled mini-set (`python -m tasks.synth`)"
            if split == "train"
            else "download MMBench_DEV_EN.tsv (VLMEvalKit LMUData) into <data-dir>/mmbench/"
        )
        return load_tsv(require_file(path, self.name, hint))

    def lmu_file(self, data_dir: Path) -> Path:
        return Path(data_dir) / "mmbench" / FILES["test"]

    def prompt(self, item: Item) -> str:
        return mc_prompt(item)

    def extract(self, output: str, item: Item) -> str | None:
        return extract_option(output, self._letters(item), item.choices)

    def score(self, extracted: str | None, item: Item) -> float:
        return 1.0 if extracted is not None and extracted == item.target else 0.0

    def target_text(self, item: Item) -> str:
        # The option's text (extraction maps it to its letter): the image-to-content skill is what
        # a small model learns first; the letter lookup comes later, if at all.
        return item.choices[self._letters(item).index(item.target)]

    def units(self, items: dict[str, Item], scores: dict[str, list[float]]) -> list[Unit]:
        """One unit per question: the minimum over its scored copies (all must be right)."""
        return [
            Unit(g, min(copy_scores), members[0].category, {"l2_category": members[0].metadata.get("l2_category", "")})
            for g, (members, copy_scores) in self._groups(items, scores).items()
        ]

    def extras(self, items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, Any]:
        circular = self.units(items, scores)
        vanilla = [
            Unit(it.cluster, _mean(scores[item_id]), it.category, {"l2_category": it.metadata.get("l2_category", "")})
            for item_id, it in ((i, items[i]) for i in scores if scores[i])
            if it.metadata.get("copy", 0) == 0
        ]
        scored_per_group = defaultdict(int)
        for item_id in scores:
            scored_per_group[items[item_id].cluster] += 1
        all_per_group = defaultdict(int)
        for it in items.values():
            all_per_group[it.cluster] += 1
        from harness.stats.ci import score_ci

        # The vanilla score's own CI: one unit per question (its base copy), Wilson for 0/1.
        vci = score_ci([u.score for u in vanilla]) if vanilla else None
        return {
            "circular": _percent(circular),
            "vanilla": _percent(vanilla),
            "vanilla_ci_low": vci.low if vci else None,
            "vanilla_ci_high": vci.high if vci else None,
            "vanilla_ci_method": vci.method if vci else None,
            "circular_per_category": per_category(circular),
            "vanilla_per_category": per_category(vanilla),
            "circular_per_l2_category": per_category(circular, "l2_category"),
            "vanilla_per_l2_category": per_category(vanilla, "l2_category"),
            "questions": len(circular),
            # Questions scored on only some of their copies: their circular score is optimistic.
            "incomplete_questions": sum(1 for g, n in scored_per_group.items() if n < all_per_group[g]),
        }

    @staticmethod
    def _letters(item: Item) -> tuple[str, ...]:
        return letters_of(item)

    @staticmethod
    def _groups(items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, tuple[list[Item], list[float]]]:
        """g_index -> (scored copies, base first; each copy's mean score over samples)."""
        groups: dict[str, tuple[list[Item], list[float]]] = {}
        for item_id, s in scores.items():
            if not s:
                continue
            it = items[item_id]
            members, copy_scores = groups.setdefault(it.cluster, ([], []))
            members.append(it)
            copy_scores.append(_mean(s))
        for members, copy_scores in groups.values():
            order = sorted(range(len(members)), key=lambda i: members[i].metadata.get("copy", 0))
            members[:] = [members[i] for i in order]
            copy_scores[:] = [copy_scores[i] for i in order]
        return groups


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _percent(units: list[Unit]) -> float:
    return 100.0 * sum(u.score for u in units) / len(units) if units else 0.0
