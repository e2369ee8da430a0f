"""harness.report.render: the files exist, hold the contract columns, escape untrusted names, embed the plot."""
from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from harness.report import render as report
from harness.errors import HarnessError
from harness.stats.board import leaderboard_frame

CONTRACT = [
    "checkpoint", "task", "n", "score", "ci_low", "ci_high", "ci_method",
    "delta", "delta_ci_low", "delta_ci_high", "p_value", "p_adjusted", "a_only", "b_only", "mde",
    "endpoint", "family_size", "rank", "rank_low", "rank_high",
]
EVIL = "<script>alert(1)</script>"
MARKUP = "[bold red]x[/] | $y$"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ids = [f"q{i}" for i in range(200)]
    base = (rng.random(200) < 0.4).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:50]] = 1  # +25 points: clearly significant
    noisy = np.where(rng.random(200) < 0.1, 1 - base, base)
    board = {
        "base": {t: dict(zip(ids, base)) for t in ("geoqa", "mmbench", "ocrbench")},
        "better": {t: dict(zip(ids, better)) for t in ("geoqa", "mmbench", "ocrbench")},
        EVIL: {"geoqa": dict(zip(ids, noisy)), "mmbench": dict(zip(ids[5:], noisy[5:]))},
        MARKUP: {"geoqa": dict(zip(ids, base))},
    }
    return leaderboard_frame(board, baseline="base", B=1_000, seed=0)


def test_csv_has_contract_columns_in_order(frame: pd.DataFrame, tmp_path: Path) -> None:
    shuffled = frame[list(reversed(frame.columns))]
    out = report.write_csv(shuffled, tmp_path / "board" / "leaderboard.csv")
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][: len(CONTRACT)] == CONTRACT
    assert set(rows[0][len(CONTRACT):]) == set(report.OPTIONAL_COLUMNS)
    assert len(rows) == 1 + len(frame)
    back = pd.read_csv(out)
    base_rows = back[back.checkpoint == "base"]
    assert base_rows.delta.isna().all() and base_rows.p_value.isna().all()
    assert set(back.checkpoint) == {"base", "better", EVIL, MARKUP}
    merged = back.merge(frame, on=["checkpoint", "task"], suffixes=("", "_orig"))
    assert np.allclose(merged.score, merged.score_orig, atol=1e-3)
    assert (merged.n == merged.n_orig).all()


def test_missing_column_is_a_clear_error(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="rank_low"):
        report.write_csv(frame.drop(columns=["rank_low"]), tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def md_cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)\|", line.strip().strip("|"))


def test_markdown_table(frame: pd.DataFrame, tmp_path: Path) -> None:
    text = report.write_markdown(frame, tmp_path / "board.md", title="Default <board>").read_text()
    assert text.startswith("# Default &lt;board&gt;\n")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4  # header, rule, one row per checkpoint
    assert all(len(md_cells(line)) == 4 for line in table)  # checkpoint + 3 tasks; "|" in a name escaped
    rows = {md_cells(line)[0].strip(): md_cells(line)[1:] for line in table[2:]}
    assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in rows
    assert "base (baseline)" in rows
    better = frame[(frame.checkpoint == "better") & (frame.task == "geoqa")].iloc[0]
    assert f"{better.score:.1f} [{better.ci_low:.1f}, {better.ci_high:.1f}]" in rows["better"][0]
    assert f"Δ +{better.delta:.1f}\\*" in rows["better"][0]
    assert "Δ" not in rows["base (baseline)"][0]
    assert rows[report._md(MARKUP)][1].strip() == "—"  # no mmbench result for that checkpoint
    assert "Units left out" in text  # EVIL's mmbench set was smaller: reported, not silent
    assert f"rank {better['rank']} [" in rows["better"][0]
    assert "Minimum detectable effect" in text and f"geoqa {better.mde:.1f}" in text
    assert "Holm" in text


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escapes_names_and_embeds_plot(frame: pd.DataFrame, tmp_path: Path) -> None:
    png = report.forest_plot(frame, tmp_path / "plot.png")
    page = report.write_html(frame, tmp_path / "board.html", title=f"Board {EVIL}", plot_png=png).read_text()
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parser = Tags()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags  # self-contained, nothing runs
    assert "style" in parser.tags
    assert len(parser.images) == 1 and parser.images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(parser.images[0].split(",", 1)[1]) == png.read_bytes()
    text = "".join(parser.text)
    assert EVIL in text and MARKUP in text  # shown literally to the reader
    assert parser.tags.count("tr") == 1 + 4


def test_html_without_plot_and_missing_plot(frame: pd.DataFrame, tmp_path: Path) -> None:
    page = report.write_html(frame, tmp_path / "a.html", title="t").read_text()
    assert "<img" not in page
    with pytest.raises(HarnessError, match="plot not found"):
        report.write_html(frame, tmp_path / "b.html", title="t", plot_png=tmp_path / "none.png")


def test_forest_plot_is_a_png_with_one_panel_per_task(frame: pd.DataFrame, tmp_path: Path) -> None:
    one_task = report.forest_plot(frame[frame.task == "geoqa"], tmp_path / "one.png")
    three = report.forest_plot(frame, tmp_path / "three.png")
    with Image.open(one_task) as a, Image.open(three) as b:
        assert a.format == b.format == "PNG"
        assert b.width > 2 * a.width  # three panels side by side


def test_rich_table_shows_names_literally(frame: pd.DataFrame) -> None:
    table = report.rich_table(frame)
    assert table.row_count == 4 and len(table.columns) == 1 + 3
    console = Console(record=True, width=220, color_system=None)
    console.print(table)
    text = console.export_text()
    assert EVIL in text and "[bold red]x[/]" in text  # not parsed as markup
    better = frame[(frame.checkpoint == "better") & (frame.task == "geoqa")].iloc[0]
    assert f"{better.score:.1f} ±{(better.ci_high - better.ci_low) / 2:.1f}" in text
    assert f"+{better.delta:.1f}*" in text


def test_writes_are_atomic(frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "leaderboard.csv"
    report.write_csv(frame, target)
    before = target.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(HarnessError, match="disk went away"):  # harness.core.files: one line naming the file
        report.write_csv(frame[frame.task == "geoqa"], target)
    assert target.read_bytes() == before  # the old result survives intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.csv"]  # no temp left behind


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no /usr/bin/chromium for a headless render")
def test_html_renders_in_headless_chromium(frame: pd.DataFrame, tmp_path: Path) -> None:
    png = report.forest_plot(frame, tmp_path / "plot.png")
    page = report.write_html(frame, tmp_path / "board.html", title="Board", plot_png=png)
    run = subprocess.run(
        [shutil.which("chromium") or "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-500:]
    # The rendered DOM holds the table and the escaped name as text, and no script element.
    assert "<table>" in run.stdout and "&lt;script&gt;alert(1)&lt;/script&gt;" in run.stdout
    assert "<script" not in run.stdout
