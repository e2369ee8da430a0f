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
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.core.task import Task
    from harness.core.types import Item
    from harness.models.backend import HFBackend
    from trainers.formats import Source

TARGETS = ("cot", "answer")


@dataclass
class Example:
    """One training question: the eval prompt, its opened images and the reference reply."""

    item: "Item"
    text: str
    images: list  # PIL images, opened once
    target: str
    task: "Task | None"  # extracts and scores this item's answers (MPO's correctness pairs); None: a data file's row
    # A data file's row (trainers/formats.py): its whole conversation, ending with the reply `target`
    # (user turns keep their `<image>` placeholders), and a preference row's rejected reply.
    messages: list[dict[str, str]] | None = None
    rejected: str | None = None
    truncate: bool = False  # a data file's row longer than the context: cut its reply (long_rows=truncate)


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


def apportion(n: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Exactly `n` items split by `shares` (normalised, summing to 1) with Hamilton's largest
    remainder: floors first, then one more each to the largest fractional parts; ties go to the
    key listed first."""
    quotas = {k: n * w for k, w in shares.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    order = list(shares)
    by_remainder = sorted(order, key=lambda k: (-(quotas[k] - counts[k]), order.index(k)))
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def load_train_data(spec: str | None, data_dir: str | Path | None, limit: int | None,
                    target: str = "cot", sources: Sequence["Source"] = ()) -> tuple[list[Example], dict[str, Any]]:
    """Training examples of one or more tasks (the first `limit` train items of each) and of the
    data files `sources` (--data; validated and summarised on stderr before any model loads),
    and the manifest's description of them."""
    from harness.core.task import get_task, resolve_data_dir

    root = resolve_data_dir(data_dir)
    examples: list[Example] = []
    per_task = {}
    for name in task_names(spec) if spec else []:
        loaded = load_examples(get_task(name), root, limit, target)
        per_task[name] = len(loaded)
        examples += loaded
    data = {"task": ",".join(per_task), "split": "train", "dir": str(root), "n": len(examples),
            "n_per_task": per_task, "hash": examples_hash(examples)}
    if sources:
        extra, data["sources"] = load_data_files(sources, limit)
        examples += extra
        data["n"], data["hash"] = len(examples), examples_hash(examples)
    if not examples:
        raise HarnessError("no training data; give --task (a task's train split) and/or --data FILE")
    return examples, data


def load_data_files(sources: Sequence["Source"], limit: int | None = None) -> tuple[list[Example], list[dict]]:
    """Examples of data files (trainers/formats.py) and each source's manifest record; prints the
    one-line summary of what was loaded."""
    import sys

    from harness.core.images import open_image
    from harness.core.types import Item
    from trainers.formats import load_sources, strip_placeholders

    loaded, summary = load_sources(list(sources), limit)
    print(summary, file=sys.stderr, flush=True)
    opened: dict[Any, Any] = {}
    out = []
    for ld in loaded:
        for row in ld.rows:
            imgs = []
            for ref in row.images:
                key = str(ref) if isinstance(ref, Path) else id(ref)
                if key not in opened:
                    try:
                        opened[key] = ref.convert("RGB") if hasattr(ref, "convert") else open_image(ref)
                    except HarnessError as e:
                        raise HarnessError(f"{ld.record['path']} row {row.id}: {e}") from None
                imgs.append(opened[key])
            user = [m["content"] for m in row.messages if m["role"] == "user"][-1]
            reply = row.messages[-1]["content"]
            refs = tuple(str(r) if isinstance(r, Path) else r for r in row.images if isinstance(r, (Path, bytes)))
            item = Item(row.id, strip_placeholders(user), reply, images=refs)
            out.append(Example(item, strip_placeholders(user), imgs, reply, None, row.messages, row.rejected,
                               ld.record.get("long_rows") == "truncate"))
    return out, [ld.record for ld in loaded]


def examples_hash(examples: Sequence[Example]) -> str:
    from harness.core.scoring import data_hash

    return data_hash(e.item for e in examples)


@dataclass(frozen=True)
class Pair:
    """A preference pair for the question examples[index]."""

    index: int
    chosen: str
    rejected: str
    kind: str = "correctness"  # how it was made: correctness | dropout_ntp | critique | given (a data file's)


def image_content(backend: "HFBackend", text: str) -> list[dict[str, str]]:
    """A user turn's `<image>` placeholders -> the chat template's content parts, so the template
    writes the model's own image placeholders: the turn's images, then its text, as evaluation
    prompts are rendered (harness/models/families.py)."""
    from trainers.formats import PLACEHOLDER, strip_placeholders

    return [{"type": "image"}] * text.count(PLACEHOLDER) + [{"type": "text", "text": strip_placeholders(text)}]


def encode_conversation(backend: "HFBackend", messages: Sequence[dict[str, str]],
                        all_replies: bool = True) -> list[tuple[str, bool]]:
    """A whole conversation as the chat template renders it turn by turn, in (text, learn) pieces:
    the assistant replies (all of them, or only the last) are learned, everything else is not. The
    family's processor then expands the images and the labels follow the pieces
    (HFBackend.conversation_inputs)."""
    chat = [{"role": m["role"], "content": image_content(backend, m["content"]) if m["role"] == "user"
             else [{"type": "text", "text": m["content"]}]} for m in messages]
    last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
    pieces: list[tuple[str, bool]] = []  # (text, is a reply to learn)
    done = ""
    for i, m in enumerate(chat):
        if m["role"] != "assistant":
            continue
        prompt = backend.render_prompt(chat[:i], add_generation_prompt=True)
        full = backend.render_prompt(chat[:i + 1], add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise HarnessError(f"{backend.ref.path}: its chat template renders earlier turns differently once a "
                               "reply follows; train on single-turn rows with this model")
        reply = full[len(prompt):].rstrip()  # trailing newlines after end-of-turn are not the model's to say
        pieces += [(prompt[len(done):], False), (reply, all_replies or i == last)]
        done = prompt + reply
    return pieces


def encode_example(backend: "HFBackend", e: Example, reply: str, all_replies: bool = True) -> list[tuple[str, bool]]:
    """A data-file example with `reply` as its last assistant turn (MPO: the chosen or the rejected)."""
    messages = list(e.messages or [])
    messages[-1] = {"role": "assistant", "content": reply}
    return encode_conversation(backend, messages, all_replies)


def _batch(backend: "HFBackend", examples: Sequence[Example], replies: Sequence[str], all_replies: bool):
    """Model inputs for examples of tasks (the eval prompt + reply) and data files (whole conversations)."""
    if not any(e.messages for e in examples):
        return backend.batch_inputs([e.text for e in examples], [e.images for e in examples], list(replies))
    pieces = []
    for e, r in zip(examples, replies):
        if e.messages:
            pieces.append(encode_example(backend, e, r, all_replies))
        else:  # a task example: its eval prompt, then the reply as the template writes it
            prompt = backend.render_prompt([{"role": "user", "content": [{"type": "image"}] * len(e.images)
                                             + [{"type": "text", "text": e.text}]}], add_generation_prompt=True)
            pieces.append([(prompt, False), (backend.reply_prefix + r + backend.reply_suffix, True)])
    return backend.conversation_inputs(pieces, [e.images for e in examples])


class SFTCollator:
    """Dataset rows {"idx": i} -> model inputs with labels on the reply tokens only (a data file's
    conversation: on every assistant turn)."""

    def __init__(self, backend: "HFBackend", examples: Sequence[Example]) -> None:
        fit_context(backend, examples)
        self.backend, self.examples = backend, examples

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = [self.examples[r["idx"]] for r in rows]
        return _checked(self.backend, _batch(self.backend, batch, [e.target for e in batch], True), batch)


class PairCollator:
    """Dataset rows {"idx": i} -> TRL's preference batch: chosen rows, then rejected rows, with
    `completion_mask` marking the reply tokens (TRL scores exactly those)."""

    def __init__(self, backend: "HFBackend", examples: Sequence[Example], pairs: Sequence[Pair]) -> None:
        pairs = fit_pairs(backend, examples, pairs)
        self.backend, self.examples, self.pairs = backend, examples, pairs

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from harness.models.backend import IGNORE_INDEX

        pairs = [self.pairs[r["idx"]] for r in rows]
        ex = [self.examples[p.index] for p in pairs]
        batch = _batch(self.backend, ex * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs], False)
        _checked(self.backend, batch, ex)
        batch["completion_mask"] = (batch.pop("labels") != IGNORE_INDEX).long()
        return batch


def given_pairs(examples: Sequence[Example]) -> list[Pair]:
    """The chosen/rejected pairs data files bring (preference rows), one per row."""
    return [Pair(i, e.target, e.rejected, "given") for i, e in enumerate(examples) if e.rejected is not None]


def index_dataset(n: int, lengths: Sequence[int] | None = None):
    """A `datasets.Dataset` of row indices: TRL's trainers want a Dataset; the collators hold the data.
    With `lengths` (row_lengths) a "length" column, which transformers' batch_rebalance sampler reads."""
    from datasets import Dataset

    columns: dict[str, list[int]] = {"idx": list(range(n))}
    if lengths is not None:
        columns["length"] = [int(x) for x in lengths]
    return Dataset.from_dict(columns)


def row_lengths(backend: "HFBackend", examples: Sequence[Example]) -> list[int]:
    """Each example's approximate length in tokens, for length-balanced micro-batches: its text tokens
    plus its images' (one image's count measured once, by collating an imaged row with and without it)."""
    per_image = 0
    imaged = next((e for e in examples if e.images and not e.messages), None)
    if imaged is not None:
        with_image = _length(backend, imaged, imaged.target)
        per_image = max(0, with_image - _text_tokens(backend, imaged)) // len(imaged.images)
    return [_text_tokens(backend, e) + per_image * len(e.images) for e in examples]


def _text_tokens(backend: "HFBackend", e: Example) -> int:
    texts = [str(m["content"]) for m in e.messages] if e.messages else [e.text, e.target]
    return sum(_tokens(backend, t, 1 << 30) for t in texts)


# --- the context ----------------------------------------------------------------------------------
# A token spans at most a few dozen characters: text far longer than the context is over it
# untokenized (tokenizing a 2 MB reply costs seconds and memory for nothing).
CHARS_PER_TOKEN = 64


def _name(e: Example) -> str:
    return f"row {e.item.id}" if e.task is None else f"{e.task.name} item {e.item.id}"


MARGIN = 32  # the chat template's own tokens around the turns: closer than this, the row is collated


def _tokens(backend: "HFBackend", text: str, limit: int) -> int:
    if len(text) > CHARS_PER_TOKEN * limit:
        return len(text) // CHARS_PER_TOKEN  # a lower bound, already over the limit
    return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def _length(backend: "HFBackend", e: Example, reply: str) -> int:
    """The row's exact length as the model sees it (template, image tokens): one collation."""
    return int(_batch(backend, [e], [reply], True)["attention_mask"].sum())


def _fit(backend: "HFBackend", e: Example, reply: str, limit: int) -> str:
    """`reply` as it fits the context after the rest of `e`, cut when the row allows it
    (long_rows=truncate); else one error naming the row and its token count. Text tokens decide
    rows far from the limit; a row near it is collated and measured."""
    context = [m["content"] for m in (e.messages or [])[:-1]] if e.messages else [e.text]
    rough = any(len(t) > CHARS_PER_TOKEN * limit for t in [*context, reply])
    n = sum(_tokens(backend, t, limit) for t in context) + _tokens(backend, reply, limit)
    if n <= limit - MARGIN:
        return reply  # image tokens are checked per batch (_checked)
    # Text tokens alone over the limit decide it: collating such a row costs minutes (the reply
    # mask's matching grows with the square of its length) to count tokens it cannot use.
    over = rough or n > limit
    if not over:
        n = _length(backend, e, reply)
        if n <= limit:
            return reply
    if e.truncate:
        rest = _length(backend, e, "")
        if rest < limit - 4:  # 4: the cut reply re-tokenized in place may merge differently at its edges
            ids = backend.tokenizer(reply[: CHARS_PER_TOKEN * limit], add_special_tokens=False)["input_ids"]
            return backend.tokenizer.decode(ids[: limit - 4 - rest], skip_special_tokens=True)
    fix = ("the rest of the row alone fills the context; shorten it" if e.truncate else
           "shorten or drop it" + (", or set long_rows: truncate on its data source (--long-rows truncate)"
                                   if e.task is None else ""))
    raise HarnessError(f"{_name(e)} has {'over ' if over else ''}{n:,} tokens, more than the model's "
                       f"context of {limit:,}; {fix}")


def fit_context(backend: "HFBackend", examples: Sequence[Example]) -> None:
    """Before training: every example fits the model's context (a long data-file reply is cut where
    its source says long_rows=truncate), else one error naming the row and its token count."""
    limit = backend.context_limit()
    if not limit:
        return
    for e in examples:
        fitted = _fit(backend, e, e.target, limit)
        if fitted != e.target:
            e.target = fitted
            if e.messages:
                e.messages = [*e.messages[:-1], {"role": "assistant", "content": fitted}]


def fit_pairs(backend: "HFBackend", examples: Sequence[Example], pairs: Sequence[Pair]) -> list[Pair]:
    """fit_context for preference pairs: both replies of each pair."""
    import dataclasses

    limit = backend.context_limit()
    if not limit:
        return list(pairs)
    out = []
    for p in pairs:
        e = examples[p.index]
        out.append(dataclasses.replace(p, chosen=_fit(backend, e, p.chosen, limit),
                                       rejected=_fit(backend, e, p.rejected, limit)))
    return out


def _checked(backend: "HFBackend", batch: dict[str, Any], examples: Sequence[Example]) -> dict[str, Any]:
    """A built batch longer than the context (image tokens included) stops training in one line."""
    limit = backend.context_limit()
    if limit and batch["input_ids"].shape[1] > limit:
        lengths = batch["attention_mask"].sum(-1).tolist()
        i = max(range(len(lengths)), key=lengths.__getitem__)
        raise HarnessError(f"{_name(examples[i % len(examples)])} is {int(lengths[i]):,} tokens with its images, more "
                           f"than the model's context of {limit:,}; shorten it or use smaller images")
    return batch
