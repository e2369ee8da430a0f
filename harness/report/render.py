"""Leaderboard renderers: CSV, Markdown, self-contained HTML, a forest plot and a Rich table.

Input: a DataFrame with one row per checkpoint x task and the columns of CSV_COLUMNS (what
`harness.stats.board.leaderboard_frame` returns), plus optional EXTRA_COLUMNS. Scores and bounds are
percent, deltas points; the delta columns are empty (NaN) for the baseline.

A delta gets the mark "*" when its multiplicity-adjusted p-value (`p_adjusted`, Holm unless the
spec says otherwise) is below 0.05; an exploratory delta (`endpoint`, outside the corrected family
of primary endpoints) gets "†" and never a star. The rules are in harness/stats/ci.py and board.py. Checkpoint and task names
are untrusted text: they are escaped for HTML, Markdown, Rich markup and matplotlib mathtext.
Every file is written atomically (a temp file in the same folder, then os.replace), so a crash
never leaves a half-written result.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from harness.core.files import atomic_write, csv_safe_frame
from harness.errors import HarnessError
from harness.stats.board import EXPLORATORY, EXTRA_COLUMNS, LEADERBOARD_COLUMNS

if TYPE_CHECKING:  # heavy imports stay lazy so `harness --help` is fast
    import pandas as pd
    from rich.table import Table

CSV_COLUMNS = LEADERBOARD_COLUMNS
OPTIONAL_COLUMNS = EXTRA_COLUMNS
SIGNIFICANT = "*"
EXPLORATORY_MARK = "†"
ALPHA = 0.05
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg (FDR)", "none": "no correction"}


def legend(correction: str = "holm", family: int | None = None, exploratory: bool = False) -> str:
    name = CORRECTION_NAMES.get(correction, correction)
    over = (f"over the board's {family} primary comparisons (each row's declared target; every task of a row "
            "that declares none)" if exploratory
            else "over every comparison on the board")
    adjusted = "unadjusted p" if correction == "none" else f"p adjusted by {name} {over}"
    marked = (f"; {EXPLORATORY_MARK} = exploratory (not the row's primary endpoint): unadjusted CI and p, "
              "never starred" if exploratory else "")
    return (
        "Cells: score in percent [95% CI (ci: auto): Wilson for 0/1 items, Wilson on the design-effect sample size "
        "for clustered 0/1 rows, Wilson on the effective sample size for partial-credit scores, seed and item variance "
        "components for multi-seed rows "
        "(mean over seeds, seed range in brackets); the CSV's ci_method names each]; "
        f"Δ = paired difference from the baseline in points, marked {SIGNIFICANT} when its {adjusted} is below "
        f"{ALPHA:g} (exact McNemar with fewer than 25 discordant pairs, else McNemar's score test for 0/1 items; "
        f"paired bootstrap for other units; seed and item variance components for multi-seed rows){marked}; rank r [lo-hi] = 1 + the number of checkpoints scoring higher, with its 95% "
        "bootstrap interval over items (independent of names and order)."
    )


LEGEND = legend()


# --- reading the frame --------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One checkpoint x task result, as the renderers show it."""

    score: float
    low: float
    high: float
    n: int
    rank: int
    rank_low: int
    rank_high: int
    delta: float | None
    delta_low: float | None
    delta_high: float | None
    p_value: float | None
    p_adjusted: float | None
    a_only: int | None
    b_only: int | None
    mde: float | None
    ci_method: str
    n_dropped: int
    seeds: int | None = None
    seed_min: float | None = None
    seed_max: float | None = None
    endpoint: str = ""
    family_size: int | None = None
    mde_family: float | None = None

    @property
    def exploratory(self) -> bool:
        return self.endpoint == EXPLORATORY

    @property
    def significant(self) -> bool:
        return not self.exploratory and self.p_adjusted is not None and self.p_adjusted < ALPHA

    @property
    def score_text(self) -> str:
        return f"{self.score:.1f} [{self.low:.1f}, {self.high:.1f}]"

    @property
    def seed_text(self) -> str:
        if self.seeds is None:
            return ""
        return f"{self.seeds} seeds {self.seed_min:.1f}-{self.seed_max:.1f}"

    @property
    def rank_text(self) -> str:
        span = f"{self.rank_low}" if self.rank_low == self.rank_high else f"{self.rank_low}-{self.rank_high}"
        return f"rank {self.rank} [{span}]"

    @property
    def delta_text(self) -> str:
        if self.delta is None:
            return ""
        mark = SIGNIFICANT if self.significant else EXPLORATORY_MARK if self.exploratory else ""
        return f"{self.delta:+.1f}{mark}"


@dataclass(frozen=True)
class Board:
    """The frame pivoted: checkpoints and tasks in first-seen order, cells by (checkpoint, task)."""

    checkpoints: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], Cell]
    baselines: list[str]
    correction: str = "holm"

    def rows(self) -> Iterator[tuple[str, list[Cell | None]]]:
        for ckpt in self.checkpoints:
            yield ckpt, [self.cells.get((ckpt, task)) for task in self.tasks]

    def task_n(self, task: str) -> str:
        ns = sorted({c.n for (_, t), c in self.cells.items() if t == task})
        return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"

    def task_mde(self, task: str) -> float | None:
        return next((c.mde for (_, t), c in self.cells.items() if t == task and c.mde is not None), None)

    def task_mde_family(self, task: str) -> float | None:
        return next((c.mde_family for (_, t), c in self.cells.items() if t == task and c.mde_family is not None), None)

    @property
    def family_size(self) -> int | None:
        return next((c.family_size for c in self.cells.values() if c.family_size is not None), None)

    @property
    def has_exploratory(self) -> bool:
        return any(c.exploratory for c in self.cells.values())

    @property
    def legend(self) -> str:
        return legend(self.correction, self.family_size, self.has_exploratory)


def _optional(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _optional_int(value: Any) -> int | None:
    number = _optional(value)
    return None if number is None else int(number)


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise HarnessError(
            f"leaderboard table lacks column(s) {', '.join(missing)}; build it with "
            "harness.stats.board.leaderboard_frame"
        )


def _board(df: pd.DataFrame) -> Board:
    _check_columns(df)
    checkpoints: list[str] = []
    tasks: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    corrections = {str(c) for c in df.get("correction", []) if isinstance(c, str) and c}
    for record in df.to_dict("records"):
        ckpt, task = str(record["checkpoint"]), str(record["task"])
        if (ckpt, task) in cells:
            raise HarnessError(f"leaderboard table has two rows for {ckpt!r} x {task!r}; keep one")
        checkpoints += [ckpt] if ckpt not in checkpoints else []
        tasks += [task] if task not in tasks else []
        cells[(ckpt, task)] = Cell(
            score=float(record["score"]), low=float(record["ci_low"]), high=float(record["ci_high"]),
            n=int(record["n"]), rank=int(record["rank"]), rank_low=int(record["rank_low"]),
            rank_high=int(record["rank_high"]),
            delta=_optional(record["delta"]), delta_low=_optional(record["delta_ci_low"]),
            delta_high=_optional(record["delta_ci_high"]), p_value=_optional(record["p_value"]),
            p_adjusted=_optional(record["p_adjusted"]), a_only=_optional_int(record["a_only"]),
            b_only=_optional_int(record["b_only"]), mde=_optional(record["mde"]),
            ci_method=str(record["ci_method"]), n_dropped=int(_optional(record.get("n_dropped")) or 0),
            seeds=_optional_int(record.get("seeds")), seed_min=_optional(record.get("seed_min")),
            seed_max=_optional(record.get("seed_max")),
            endpoint=str(record["endpoint"]) if isinstance(record["endpoint"], str) else "",
            family_size=_optional_int(record["family_size"]), mde_family=_optional(record.get("mde_family")),
        )
    # The baseline is the checkpoint with no delta anywhere.
    baselines = [c for c in checkpoints if all(cell.delta is None for (k, _), cell in cells.items() if k == c)]
    return Board(checkpoints, tasks, cells, baselines, corrections.pop() if len(corrections) == 1 else "holm")


def _dropped_note(board: Board) -> str:
    dropped = [f"{k} / {t}: {c.n_dropped}" for (k, t), c in board.cells.items() if c.n_dropped]
    if not dropped:
        return ""
    return "Units left out to compare every checkpoint on the same items: " + "; ".join(dropped) + "."


def mde_note(board: Board) -> str:
    """The footer line: what each task's n can detect, alone and at the family's threshold."""
    parts = [f"{t} {m:.1f}" for t in board.tasks if (m := board.task_mde(t)) is not None]
    if not parts:
        return ""
    text = ("Minimum detectable effect (points; a single paired comparison at 80% power, two-sided 5%, "
            "from n and the median discordance with the baseline): " + ", ".join(parts) + ".")
    m = board.family_size
    family = [f"{t} {f:.1f}" for t in board.tasks if (f := board.task_mde_family(t)) is not None]
    if m and m > 1 and family and board.correction != "none":
        what = f"{m} primary comparisons" if board.has_exploratory else f"{m} comparisons"
        text += (f" A star needs more: at the family threshold (p < {ALPHA:g}/{m}, "
                 f"{CORRECTION_NAMES.get(board.correction, board.correction)} over {what}): " + ", ".join(family) + ".")
    return text


# --- CSV and Markdown ---------------------------------------------------------------------------
def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """The contract columns first, in order, then optional and any further columns."""
    _check_columns(df)
    rest = [c for c in OPTIONAL_COLUMNS if c in df.columns]
    rest += [c for c in df.columns if c not in CSV_COLUMNS and c not in rest]
    # Checkpoint names are untrusted: no spreadsheet formulas.
    text = csv_safe_frame(df[[*CSV_COLUMNS, *rest]]).to_csv(index=False, float_format="%.6g", lineterminator="\n")
    return atomic_write(path, text.encode("utf-8"))


def _md(text: str) -> str:
    """Untrusted text for a Markdown table cell: no HTML, no cell breaks, no newlines."""
    return html.escape(" ".join(text.split())).replace("|", "\\|")


def write_markdown(df: pd.DataFrame, path: str | Path, title: str, legend_lines: Sequence[str] = ()) -> Path:
    """`legend_lines`: what the board says beside the statistics' legend (e.g. which judge scored)."""
    board = _board(df)
    header = ["checkpoint", *(f"{_md(t)} (n={board.task_n(t)})" for t in board.tasks)]
    lines = [f"# {_md(title)}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ckpt, cells in board.rows():
        name = _md(ckpt) + (" (baseline)" if ckpt in board.baselines else "")
        texts = [
            "—" if c is None else " · ".join(filter(None, [c.score_text, c.seed_text, c.delta_text and f"Δ {c.delta_text}",
                                                     c.rank_text])).replace("*", r"\*")
            for c in cells
        ]
        lines.append("| " + " | ".join([name, *texts]) + " |")
    lines += ["", board.legend.replace("*", r"\*")]
    for note in (mde_note(board), _dropped_note(board), *legend_lines):
        if note:
            lines += ["", _md(note)]
    return atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))


# --- HTML ---------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.7em; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
.ci { color: #666; font-size: 0.85em; }
.up { color: #11772d; font-weight: bold; }
.down { color: #b3261e; font-weight: bold; }
.rank { color: #666; font-size: 0.85em; }
.expl { color: #777; font-style: italic; }
.base { font-style: italic; }
img { max-width: 100%; }
p.note { color: #555; max-width: 60em; }
a { color: inherit; }
"""


def _link(text: str, href: str | None) -> str:
    """`text` (already HTML) as a link to a sample viewer page; hrefs are our own quoted file names."""
    return f"<a href='{html.escape(href, quote=True)}'>{text}</a>" if href else text


def _html_cell(cell: Cell | None, links: dict[str, str] | None = None) -> str:
    links = links or {}
    if cell is None:
        return "<td>—</td>"
    tip = [f"n={cell.n}", f"CI: {cell.ci_method}"]
    if cell.p_value is not None:
        adjusted = "" if cell.p_adjusted is None else f", adjusted p={cell.p_adjusted:.3g} (family of {cell.family_size})"
        tip.append(f"p={cell.p_value:.3g}{adjusted}")
    if cell.exploratory:
        tip.append("exploratory: not this row's primary endpoint; unadjusted, never starred")
    if cell.a_only is not None:
        tip.append(f"only this right: {cell.a_only}, only the baseline right: {cell.b_only}")
    parts = [_link(f"{cell.score:.1f}", links.get("score")) + f" <span class='ci'>[{cell.low:.1f}, {cell.high:.1f}]</span>"]
    if cell.seeds is not None:
        parts.append(f"<span class='ci'>{html.escape(cell.seed_text)}</span>")
    if cell.delta is not None:
        kind = ("up" if cell.delta > 0 else "down") if cell.significant else "expl" if cell.exploratory else "flat"
        parts.append(_link(f"<span class='{kind}'>Δ {html.escape(cell.delta_text)}</span>", links.get("delta")))
    parts.append(f"<span class='rank'>{cell.rank_text}</span>")
    return f"<td title='{html.escape(', '.join(tip), quote=True)}'>{'<br>'.join(parts)}</td>"


def write_html(df: pd.DataFrame, path: str | Path, title: str, plot_png: str | Path | None = None,
               links: dict[tuple[str, str], dict[str, str]] | None = None, legend_lines: Sequence[str] = ()) -> Path:
    """One self-contained page: inline CSS, the plot as a base64 data URI, all data escaped.

    `links` maps (checkpoint, task) to the hrefs of its sample viewer pages ("score": the run's
    samples, "delta": the items that flipped against the baseline); see harness.report.viewer.
    """
    links = links or {}
    board = _board(df)
    esc = html.escape
    head = "".join(f"<th>{esc(t)}<br><span class='ci'>n={board.task_n(t)}</span></th>" for t in board.tasks)
    body = []
    for ckpt, cells in board.rows():
        base = " <span class='base'>(baseline)</span>" if ckpt in board.baselines else ""
        body.append(f"<tr><td>{esc(ckpt)}{base}</td>{''.join(_html_cell(c, links.get((ckpt, t))) for c, t in zip(cells, board.tasks))}</tr>")
    figure = ""
    if plot_png is not None:
        png = Path(plot_png)
        if not png.is_file():
            raise HarnessError(f"plot not found: {png}; draw it with forest_plot first or pass no plot")
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        figure = f"<img alt='scores with 95% confidence intervals' src='data:image/png;base64,{data}'>"
    click = "Click a score for its samples, a Δ for the items that flipped." if links else ""
    notes = "".join(f'<p class="note">{esc(n)}</p>'
                    for n in (board.legend, click, mde_note(board), _dropped_note(board), *legend_lines) if n)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_CSS}</style></head>
<body><h1>{esc(title)}</h1>
<table><thead><tr><th>checkpoint</th>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
{notes}
{figure}
</body></html>
"""
    return atomic_write(path, page.encode("utf-8"))


# --- plot and terminal --------------------------------------------------------------------------
def _plain(text: str) -> str:
    # matplotlib reads $...$ as mathtext; a checkpoint name must show as typed.
    return text.replace("$", r"\$")


def forest_plot(df: pd.DataFrame, path: str | Path) -> Path:
    """Score with its CI per checkpoint, one panel per task; the baseline's score dashed."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    board = _board(df)
    cols = min(3, len(board.tasks))
    rows = math.ceil(len(board.tasks) / cols)
    height = 0.8 + 0.28 * len(board.checkpoints)
    fig = Figure(figsize=(4.2 * cols, height * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without touching pyplot's global backend
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    positions = {c: len(board.checkpoints) - 1 - i for i, c in enumerate(board.checkpoints)}
    for index, (ax, task) in enumerate(zip(axes, board.tasks)):
        for ckpt in board.checkpoints:
            cell = board.cells.get((ckpt, task))
            if cell is None:
                continue
            is_base = ckpt in board.baselines
            colour = "#444444" if is_base else ("#11772d" if cell.significant and (cell.delta or 0) > 0 else "#b3261e" if cell.significant else "#1f5fa8")
            ax.errorbar(
                cell.score, positions[ckpt], xerr=[[cell.score - cell.low], [cell.high - cell.score]],
                fmt="s" if is_base else "o", color=colour, capsize=3, markersize=5,
                markerfacecolor="white" if cell.exploratory else colour,
            )
            if is_base:
                ax.axvline(cell.score, color="#888888", linestyle="--", linewidth=1)
        ax.set_yticks(list(positions.values()), labels=[_plain(c) for c in positions])
        ax.set_ylim(-0.7, len(board.checkpoints) - 0.3)
        ax.tick_params(axis="y", labelleft=index % cols == 0)  # names once per row of panels
        ax.set_title(_plain(f"{task} (n={board.task_n(task)})"), fontsize=10)
        ax.set_xlabel("score (%)")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(board.tasks):]:
        ax.set_visible(False)
    fig.suptitle(
        "score with 95% CI; green / red: significantly above / below the baseline (square, dashed)"
        + ("; hollow: exploratory (not the row's primary endpoint, never starred)" if board.has_exploratory else ""),
        fontsize=9,
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, buffer.getvalue())


def rich_table(df: pd.DataFrame, legend_lines: Sequence[str] = ()) -> Table:
    """Score ± half-width per task and the delta vs the baseline with its mark (plain Text: no markup)."""
    from rich.table import Table
    from rich.text import Text

    from harness.core.text import visible

    board = _board(df)
    caption = " ".join(filter(None, [board.legend, mde_note(board), *map(visible, legend_lines)]))
    table = Table(caption=Text(caption), caption_justify="left")
    table.add_column("checkpoint", no_wrap=True)
    for task in board.tasks:
        table.add_column(Text(f"{visible(task)}\nn={board.task_n(task)}"), justify="right")
    for ckpt, cells in board.rows():
        name = Text(visible(ckpt)) + (Text(" (baseline)", style="italic") if ckpt in board.baselines else Text(""))
        texts = []
        for cell in cells:
            if cell is None:
                texts.append(Text("—"))
                continue
            text = Text(f"{cell.score:.1f} ±{(cell.high - cell.low) / 2:.1f}")
            if cell.delta is not None:
                style = ("bold green" if (cell.delta or 0) > 0 else "bold red") if cell.significant else "dim"
                text.append(f"\n{cell.delta_text}", style=style)
            text.append(f"  r{cell.rank} [{cell.rank_low}-{cell.rank_high}]", style="dim")
            texts.append(text)
        table.add_row(name, *texts)
    return table
