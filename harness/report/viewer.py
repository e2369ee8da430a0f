"""The sample viewer: static HTML pages that show the samples behind every score, and the flips.

    harness view runs/sft [--vs runs/tiny] --out view/     # one page per task run (+ flips pages)
    harness diff runs/sft/geoqa runs/tiny/geoqa --task geoqa

A page lists every item of one checkpoint x task run: embedded thumbnail, question, choices,
target, category, the prompt, and each sample's raw output, extracted answer and score (K
samples side by side), with filters, search and sorting (the page itself: harness.report.viewer_page).
A flips page pairs a run with a baseline run over the statistics' units (Task.units: an item,
or an MMBench circular group) and lists those whose score changed; with 0/1 unit scores its
wrong->right / right->wrong counts are the discordant counts (a_only / b_only) McNemar and the
leaderboard use, because they are computed from the same unit scores on the same common units.
The leaderboard writes these pages beside leaderboard.html and links each cell to its page.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:
    from rich.table import Table

    from harness.core.task import Task, Unit
    from harness.core.types import ImageRef, Item

THUMB_SIDE = 96  # pixels; WebP at this size is ~1-2 kB, so 5,000 thumbnails stay well under 10 MB
THUMB_QUALITY = 50
MAX_IMAGES = 4  # thumbnails per item


@dataclass
class RunView:
    """One scored run: its samples, the task's items for them, and the statistics' units."""

    label: str  # the checkpoint's name as the leaderboard shows it
    task: Task
    items: dict[str, Item]
    records: list[dict[str, Any]]

    def per_item(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in self.records:
            if r["id"] in self.items:
                out[r["id"]].append(r)
        for rows in out.values():
            rows.sort(key=lambda r: r["sample"])
        return dict(out)

    def units(self) -> list[Unit]:
        """The statistics' units, exactly as the leaderboard sees them (Task.units)."""
        scores = {i: [r["score"] for r in rows] for i, rows in self.per_item().items()}
        return self.task.units(self.items, scores)

    def unit_scores(self) -> dict[str, float]:
        """Unit id -> score, exactly as the leaderboard and `stats` see them."""
        return {u.id: u.score for u in self.units()}

    def unit_of(self) -> dict[str, str]:
        """Item id -> its unit id (the item itself, or its group when the task scores groups)."""
        units = set(self.unit_scores())
        return {i: i if i in units else it.cluster for i, it in self.items.items()}


def load_run(run_dir: str | Path, data_dir: str | Path | None = None, label: str | None = None) -> RunView:
    """A run folder written by `harness eval` or `harness score` (samples.jsonl + summary.json),
    read by harness.core.rundir.read_run: scores checked and re-scored by the task's current rule
    (what it said of the samples is printed as a warning)."""
    import sys

    from harness.core.rundir import read_run

    run = read_run(run_dir, data_dir=data_dir, need_record=True)
    for note in run.notes():
        print(f"warning: {note}", file=sys.stderr)
    name = label or ((run.record.checkpoint or {}).get("name") if run.record else None)
    return RunView(str(name or Path(run_dir).parent.name), run.task, run.items, run.records)


# --- flips ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flips:
    """Units whose score differs between a run (a) and its baseline (b), over their common units."""

    n: int  # common units compared
    kinds: dict[str, str]  # unit id -> "wr" (wrong->right), "rw", or "up"/"down" for non-0/1 scores
    a: dict[str, float]
    b: dict[str, float]

    def count(self, kind: str) -> int:
        return sum(1 for k in self.kinds.values() if k == kind)

    @property
    def wrong_to_right(self) -> int:  # = stats a_only: units only the run gets right
        return self.count("wr")

    @property
    def right_to_wrong(self) -> int:  # = stats b_only
        return self.count("rw")


def flips(a: Mapping[str, float], b: Mapping[str, float], units: Iterable[str] | None = None) -> Flips:
    """Paired changes from b (baseline) to a; `units` restricts to the ids the statistics compare."""
    common = sorted(set(a) & set(b) & (set(units) if units is not None else set(a)))
    kinds = {}
    for u in common:
        if a[u] == b[u]:
            continue
        if a[u] in (0.0, 1.0) and b[u] in (0.0, 1.0):
            kinds[u] = "wr" if a[u] == 1.0 else "rw"
        else:
            kinds[u] = "up" if a[u] > b[u] else "down"
    return Flips(len(common), kinds, {u: a[u] for u in common}, {u: b[u] for u in common})


# --- thumbnails -----------------------------------------------------------------------------------
_thumbs: dict[str, str] = {}  # digest -> data URI; a leaderboard shows the same images on every page


def thumbnail(ref: ImageRef) -> str | None:
    """A small WebP data URI of an image, or None when it cannot be read (the page says so)."""
    from PIL import Image

    from harness.core.images import image_digest

    try:
        digest = image_digest(ref)
    except HarnessError:
        return None
    if digest not in _thumbs:
        try:
            with Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref) as img:
                img.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))  # JPEG: decode at a reduced scale
                small = img.convert("RGB")
                small.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            small.save(buf, "WEBP", quality=THUMB_QUALITY, method=4)
        except Exception:  # PIL raises many types for corrupt files; a viewer shows what it can
            return None
        import base64

        _thumbs[digest] = "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return _thumbs[digest]


# --- page data ------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _samples(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[_text(r["output"]), None if r["extracted"] is None else _text(r["extracted"]), float(r["score"])] for r in rows]


def page_data(run: RunView, base: RunView | None = None, units: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON a page shows: every item of `run`, or with `base` the items of flipped units."""
    per_item = run.per_item()
    thumbs: list[str] = []
    thumb_index: dict[str, int] = {}
    unit_of = run.unit_of()
    pair = flips(run.unit_scores(), base.unit_scores(), units) if base is not None else None
    base_items = base.per_item() if base is not None else {}
    rows = []
    for order, (item_id, samples) in enumerate(per_item.items()):
        item = run.items[item_id]
        unit = unit_of[item_id]
        if pair is not None and unit not in pair.kinds:
            continue
        img = []
        for ref in item.images[:MAX_IMAGES]:
            uri = thumbnail(ref)
            if uri is not None:
                img.append(thumb_index.setdefault(uri, len(thumbs)))
                if img[-1] == len(thumbs):
                    thumbs.append(uri)
        prompt = run.task.prompt(item)
        row = {"o": order, "id": item.id, "q": item.question, "ch": list(item.choices), "t": _text(item.target),
               "c": item.category, "img": img, "s": _samples(samples)}
        if prompt != item.question:
            row["p"] = prompt
        if pair is not None:
            row.update(b=_samples(base_items.get(item_id, [])), f=pair.kinds[unit], un=unit,
                       u=pair.a[unit], bu=pair.b[unit])
        rows.append(row)
    summary = run.unit_scores()
    score = 100.0 * sum(summary.values()) / max(1, len(summary))
    data: dict[str, Any] = {
        "checkpoint": run.label, "task": run.task.name, "rows": rows, "thumbs": thumbs,
        "categories": sorted({r["c"] for r in rows}),
    }
    if pair is None:
        unparsed = sum(1 for r in run.records if r["id"] in run.items and r["extracted"] is None)
        data["title"] = f"{run.label} · {run.task.name}"
        data["subtitle"] = (f"{len(rows)} items, {len(run.records)} samples, {len(summary)} units; "
                            f"score {score:.1f}; unparsed samples: {unparsed}")
    else:
        data.update(baseline=base.label, flips={k: pair.count(k) for k in ("wr", "rw", "up", "down")})
        data["title"] = f"{run.label} vs {base.label} · {run.task.name}: flipped units"
        data["subtitle"] = (f"{pair.n} units compared; wrong → right: {pair.wrong_to_right}, "
                            f"right → wrong: {pair.right_to_wrong}" +
                            (f"; better: {pair.count('up')}, worse: {pair.count('down')} (non-0/1 unit scores)"
                             if pair.count("up") + pair.count("down") else "") +
                            f". Each row is one item of a flipped unit; both sides' outputs are shown.")
    return data


# --- writing pages --------------------------------------------------------------------------------
def file_stem(text: str) -> str:
    """A file name for untrusted text: safe characters only, a short hash when anything changed."""
    clean = re.sub(r"[^A-Za-z0-9._+@-]", "_", text).lstrip(".") or "_"
    if clean != text:
        clean += "-" + hashlib.sha256(text.encode()).hexdigest()[:6]
    return clean


def _page_key(run: RunView, base: RunView | None, units: Iterable[str] | None) -> str:
    """Everything a page shows, hashed before any thumbnail is made: unchanged pages are skipped."""
    from harness.report import viewer_page
    from harness.core.scoring import data_hash

    h = hashlib.sha256()
    for side in (run, base):
        if side is not None:
            fields = [[r["id"], r["sample"], r["output"], r["extracted"], r["score"]] for r in side.records]
            images = [[str(ref) if not isinstance(ref, bytes) else hashlib.sha256(ref).hexdigest()
                       for ref in it.images] for it in side.items.values()]
            h.update(json.dumps([side.label, side.task.name, side.task.opts, fields, images], default=str).encode())
            h.update(data_hash(side.items.values()).encode())
    h.update(json.dumps(sorted(units) if units is not None else None).encode())
    for module in (__file__, viewer_page.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:32]


def write_page(path: Path, run: RunView, base: RunView | None = None, units: Iterable[str] | None = None) -> Path:
    """Write a run's page (or its flips page against `base`) atomically; unchanged pages are kept."""
    from harness.report import viewer_page
    from harness.core.files import atomic_write

    units = None if units is None else set(units)
    key = _page_key(run, base, units)
    if path.is_file():
        with path.open(encoding="utf-8", errors="replace") as f:
            if f'content="{key}"' in f.read(400):
                return path
    return atomic_write(path, viewer_page.render(page_data(run, base, units), key).encode("utf-8"))


def write_view(run_dirs: list[Path], out: Path, vs: list[Path] | None = None, data_dir: str | None = None) -> list[Path]:
    """`harness view`: a page per run (and a flips page per run with --vs), returned in order.

    Every run is read and checked before the first page is written (no half-written output)."""
    pairs = []
    for i, run_dir in enumerate(run_dirs):
        run = load_run(run_dir, data_dir)
        base = load_run(vs[i], data_dir) if vs is not None else None
        if base is not None and base.task.name != run.task.name:
            raise HarnessError(f"{run_dir} is a {run.task.name} run but {vs[i]} is {base.task.name}; "
                               "compare runs of the same task")
        pairs.append((run_dir, run, base))
    written = []
    for run_dir, run, base in pairs:
        stem = f"{file_stem(run.label)}--{file_stem(run_dir.name)}"
        written.append(write_page(out / f"{stem}.html", run))
        if base is not None:
            written.append(write_page(out / f"{stem}--vs-{file_stem(base.label)}.html", run, base))
    return written


def find_runs(path: Path) -> list[Path]:
    """A run folder itself, or the run folders directly inside a checkpoint's folder."""
    if (path / "samples.jsonl").is_file():
        return [path]
    runs = sorted(p for p in path.iterdir() if (p / "samples.jsonl").is_file()) if path.is_dir() else []
    if not runs:
        raise HarnessError(f"no runs in {path}: give a run folder (with samples.jsonl) or a folder of them, "
                           "as `harness eval --output-dir` writes")
    return runs


def leaderboard_pages(out_dir: Path, runs: Mapping[tuple[str, str], RunView], baseline: str,
                      unit_scores: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """Pages for every (checkpoint, task) run of a leaderboard, under out_dir/samples/.

    Returns, per (checkpoint, task), the hrefs (relative to out_dir) of its page ("score") and of
    its flips page against the baseline ("delta"). The flips use the leaderboard's own unit
    scores, over the units every checkpoint of the task shares, as leaderboard_frame does.
    """
    from urllib.parse import quote

    links: dict[tuple[str, str], dict[str, str]] = {}
    for (label, task), run in runs.items():
        stem = f"{file_stem(label)}--{file_stem(task)}"
        page = write_page(out_dir / "samples" / f"{stem}.html", run)
        links[(label, task)] = {"score": "samples/" + quote(page.name)}
        if label == baseline or (baseline, task) not in runs:
            continue
        # A seeds row holds one mapping per seed; the statistics keep the units all of them share.
        shared = set.intersection(*(set(m) for c in unit_scores.values() if task in c
                                    for m in ([c[task]] if isinstance(c[task], Mapping) else c[task])))
        flip = write_page(out_dir / "samples" / f"{stem}--vs-{file_stem(baseline)}.html", run,
                          runs[(baseline, task)], shared)
        links[(label, task)]["delta"] = "samples/" + quote(flip.name)
    return links


# --- terminal -------------------------------------------------------------------------------------
def diff_table(a: RunView, b: RunView, first: int = 20) -> Table:
    """`harness diff`: the flip counts and the first `first` flipped items as a rich table."""
    from rich.table import Table
    from rich.text import Text

    from harness.core.text import visible

    pair = flips(a.unit_scores(), b.unit_scores())
    counts = f"wrong→right {pair.wrong_to_right}, right→wrong {pair.right_to_wrong}"
    if pair.count("up") + pair.count("down"):
        counts += f", better {pair.count('up')}, worse {pair.count('down')}"
    table = Table(title=Text(visible(f"{a.task.name}: {a.label} vs {b.label} ({pair.n} common units; {counts})")))
    for col in ("unit", "item", "flip", f"{b.label} output", f"{a.label} output", "target"):
        table.add_column(Text(visible(col)), overflow="fold")
    names = {"wr": "wrong→right", "rw": "right→wrong", "up": "better", "down": "worse"}
    items_a, items_b, unit_of = a.per_item(), b.per_item(), a.unit_of()
    shown = 0
    for item_id, rows in items_a.items():
        unit = unit_of[item_id]
        if unit not in pair.kinds or shown >= first:
            continue
        shown += 1

        def outs(samples: list[dict[str, Any]]) -> Text:
            return Text(visible("\n".join(f"{_text(r['output'])[:200]!r} → {r['extracted']!r} ({r['score']:g})"
                                           for r in samples)))

        table.add_row(Text(visible(unit)), Text(visible(item_id)), Text(names[pair.kinds[unit]]),
                      outs(items_b.get(item_id, [])), outs(rows), Text(visible(_text(a.items[item_id].target))))
    return table


def category_table(a: Sequence[RunView], b: Sequence[RunView], level: float = 0.95) -> Table:
    """`harness diff`: a - b per category (harness.stats.categories) as a rich table; a side with
    several runs is one treatment's seeds."""
    from rich.table import Table
    from rich.text import Text

    from harness.core.text import visible
    from harness.stats.categories import ALL, category_differences

    rows = category_differences([r.units() for r in a], [r.units() for r in b], level=level)
    la, lb = a[0].label, b[0].label
    table = Table(title=Text(visible(f"{a[0].task.name} by category: {la} - {lb} ({level:.0%} CI; Holm over the categories)")))
    for col in ("category", "units", lb, la, "delta [CI]", "p", "p Holm", "method"):
        table.add_column(Text(visible(col)))
    for row in rows:
        table.add_row(Text(visible(row.category)), str(row.n), f"{row.score_b:.1f}", f"{row.score_a:.1f}",
                      f"{row.delta:+.1f} [{row.low:+.1f}, {row.high:+.1f}]", f"{row.p_value:.3g}",
                      "" if row.category == ALL else f"{row.p_adjusted:.3g}", row.method)
    return table
