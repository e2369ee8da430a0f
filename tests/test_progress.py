"""Progress where nobody watches a terminal: plain timed lines instead of a rich bar's blank lines."""
from __future__ import annotations

import re

from harness.core.progress import PlainProgress, progress_bar


def test_plain_lines_at_the_interval_and_at_the_end(capsys, monkeypatch):
    clock = iter([0.0, 5.0, 25.0, 30.0, 60.0])
    monkeypatch.setattr("harness.core.progress.time.monotonic", lambda: next(clock))
    bar = PlainProgress(interval=20)
    task = bar.add_task("tiny geoqa", total=100)  # t=0
    bar.advance(task, 10)  # t=5: before the interval, silent
    bar.advance(task, 40)  # t=25: a line
    bar.advance(task, 0)   # t=30: silent again
    bar.advance(task, 50)  # t=60: finished, a final line
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["tiny geoqa: 50/100 (50%), 2.00/s, ETA 0m25s", "tiny geoqa: 100/100 (100%), 1.67/s, done in 1m00s"]


def test_no_terminal_gets_the_plain_progress(capsys):
    # pytest captures stdout and stderr: neither is a terminal, as in CI or `| tee`.
    with progress_bar() as bar:
        assert isinstance(bar, PlainProgress)
        task = bar.add_task("train sft", total=3)
        bar.update(task, completed=3, description="train sft loss 0.512")
    assert re.fullmatch(r"train sft loss 0\.512: 3/3 \(100%\), .*done in 0m00s\n", capsys.readouterr().err)
    disabled = progress_bar(enabled=False)
    disabled.advance(disabled.add_task("x", total=1), 1)
    assert capsys.readouterr().err == ""
