"""The task contract: a benchmark is one module under tasks/ with one Task subclass.

A task loads the benchmark's real on-disk format into Items, builds the prompt, extracts the
answer from a model output and scores it by the official rule. The engine finds tasks through
the `harness.tasks` entry points (pyproject.toml), so it never imports a benchmark by name.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from harness.core.files import read_json, read_jsonl  # noqa: F401  (loaders import them from here)
from harness.core.types import Item
from harness.errors import HarnessError

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Unit:
    """What statistics resample: an item, or a group of items scored together (MMBench circular)."""

    id: str
    score: float
    category: str
    extra: dict[str, str] | None = None  # further breakdown keys, e.g. {"l2_category": ...}
    # Units sharing a cluster are not independent (lmudata_mc's circular copies): statistics keep
    # each unit's weight but resample whole clusters. None: the unit is its own cluster.
    cluster: str | None = None


class Task:
    """Base class. Subclasses set `name` and implement load/prompt/extract/score."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # Where the data lives under the data dir, shown by `harness tasks` and in errors.
    data_layout: ClassVar[str] = ""
    # Options a user may set from the CLI: name -> allowed values; the first is the default.
    options: ClassVar[dict[str, tuple[str, ...]]] = {}
    # name -> what the option chooses; `--<name>` flags and their help are built from it.
    option_help: ClassVar[dict[str, str]] = {}
    # The bundled mini-set's generator: a module with build(out_dir, split, n, seed) (`make data`
    # runs it), the (test, train) item counts it builds and the data folders it writes. Tasks
    # sharing a data folder name the generator once (aokvqa_mc builds aokvqa_da's data too).
    synth: ClassVar[str | None] = None
    synth_sizes: ClassVar[tuple[int, int]] = (0, 0)
    synth_dirs: ClassVar[tuple[str, ...]] = ()
    # `harness train data_engine` may generate new items of this task's question types with
    # `synth` (its build takes types=[...] and the module lists TYPES).
    data_engine: ClassVar[bool] = False
    # `harness export-lmms-task`: the test file lmms-eval reads (relative to the data dir) and its
    # field holding our item id; None when lmms-eval has its own version of the benchmark.
    lmms_source: ClassVar[tuple[str, str] | None] = None
    # `harness export --format vlmeval`: the task reads an LMUData TSV, so its runs export as one.
    lmu_tsv: ClassVar[bool] = False
    # "generate": free generation; "choice_likelihood": rank item.choices by mean token loss.
    request_type: ClassVar[str] = "generate"
    max_new_tokens: ClassVar[int] = 32
    # The scores come from a judge model (harness.judge), not from score(): runs need a checkpoint.
    judged: ClassVar[bool] = False
    # The version of extract + score. Bump it when either changes what a stored output scores: run
    # records carry it, and every reader re-scores stored outputs and names runs scored by another.
    rule_version: ClassVar[str] = "1"
    # The range a per-sample score lies in; readers refuse a stored score outside it.
    score_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    # Stored outputs can be re-scored by extract + score (False for imported scores, e.g. lmms-eval's).
    rescorable: ClassVar[bool] = True

    def __init__(self, **opts: str) -> None:
        self.opts: dict[str, str] = {}
        for key, allowed in self.options.items():
            value = opts.pop(key, None) or allowed[0]
            if value not in allowed:
                raise HarnessError(
                    f"task {self.name}: --{key.replace('_', '-')} {value!r} is not one of "
                    f"{', '.join(allowed)}"
                )
            self.opts[key] = value
        if opts:
            raise HarnessError(f"task {self.name} has no option(s) {', '.join(sorted(opts))}")

    # --- the four steps every task defines -------------------------------------------------
    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        raise NotImplementedError

    def prompt(self, item: Item) -> str:
        raise NotImplementedError

    def extract(self, output: str, item: Item) -> str | None:
        """The answer found in `output`, or None when unparsed (scored wrong, counted)."""
        raise NotImplementedError

    def score(self, extracted: str | None, item: Item) -> float:
        raise NotImplementedError

    def items_by_id(self, data_dir: Path, split: Split = "test") -> dict[str, Item]:
        """load(), keyed by item id (in file order)."""
        return {it.id: it for it in self.load(data_dir, split)}

    # --- optional hooks --------------------------------------------------------------------
    def batch_group(self, item: Item) -> str | None:
        """Items of one group are batched together (their prompts share a prefix); None: by length."""
        return None

    def rule(self) -> dict[str, str] | None:
        """The rule that scores stored outputs, as run records name it."""
        return {"task": self.name, "version": self.rule_version} if self.rescorable else None

    def lmu_file(self, data_dir: Path) -> Path | None:
        """The LMUData TSV the test split is read from (`lmu_tsv` tasks: `harness export --format vlmeval`)."""
        return None

    @classmethod
    def reopen(cls, options: dict[str, str], record_extras: dict[str, Any]) -> Task:
        """The task a run record names: its options (a task may need more of the record)."""
        return cls(**options)

    def target_text(self, item: Item) -> str:
        """The reply a model should give (training target for SFT and the tiny model)."""
        raise NotImplementedError

    def units(self, items: dict[str, Item], scores: dict[str, list[float]]) -> list[Unit]:
        """Aggregate per-item sample scores into the units statistics resample.

        Default: one unit per item, its score the mean over that item's samples.
        """
        return [
            Unit(item_id, sum(s) / len(s), items[item_id].category)
            for item_id, s in scores.items()
            if s
        ]

    def extras(self, items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, Any]:
        """Task-specific summary fields (OCRBench points, MMBench vanilla score, ...)."""
        return {}

    def excluded_ids(self, data_dir: Path, split: Split = "test") -> frozenset[str]:
        """Ids in the benchmark file that the official rule leaves out of the score (not items):
        `harness score` skips and counts their predictions instead of refusing them."""
        return frozenset()


# --- registry -------------------------------------------------------------------------------
def task_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group="harness.tasks"))


def task_class(name: str) -> type[Task]:
    found = {ep.name: ep for ep in entry_points(group="harness.tasks")}
    if name not in found:
        raise HarnessError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(found)) or 'none'} "
            "(is the project installed? run `make setup`)"
        )
    return found[name].load()


def task_classes() -> dict[str, type[Task]]:
    """Every registered task class by name (what the CLI derives task flags from)."""
    return {ep.name: ep.load() for ep in sorted(entry_points(group="harness.tasks"), key=lambda e: e.name)}


def get_task(name: str, **opts: str) -> Task:
    return task_class(name)(**opts)


# --- data locations ---------------------------------------------------------------------------
BUNDLED_DATA = Path(__file__).resolve().parents[2] / "data"


def resolve_data_dir(arg: str | Path | None = None) -> Path:
    """--data-dir, else $HARNESS_DATA, else the bundled mini-sets shipped in the repo."""
    import os

    chosen = arg or os.environ.get("HARNESS_DATA") or BUNDLED_DATA
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise HarnessError(f"data dir not found: {path}; pass --data-dir or set HARNESS_DATA to an existing folder")
    return path


# --- helpers for loaders ----------------------------------------------------------------------
def require_file(path: Path, task: str, hint: str = "") -> Path:
    if not path.is_file():
        fix = hint or "pass --data-dir pointing at a folder with this layout (see `harness tasks`)"
        raise HarnessError(f"{task}: data file not found: {path}; {fix}")
    return path


def per_category(units: Sequence[Unit], key: str | None = None) -> dict[str, float]:
    """Percent score per category (or per `unit.extra[key]`)."""
    buckets: dict[str, list[float]] = defaultdict(list)
    for u in units:
        cat = u.category if key is None else (u.extra or {}).get(key, "")
        buckets[cat].append(u.score)
    return {c: 100.0 * sum(v) / len(v) for c, v in sorted(buckets.items())}
