"""One progress display for every long loop (generation, judging, sampling, training).

On a terminal: a rich bar on stderr. Where nobody watches one (CI, cluster job logs, `| tee`),
a rich bar leaves only blank lines, so a plain line is printed instead every ~20 s and when a
loop finishes: `label: done/total (pct) rate/s ETA`. HARNESS_PROGRESS_INTERVAL sets the seconds.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any


def progress_bar(enabled: bool = True):
    """A rich Progress on a terminal, a PlainProgress elsewhere (same add_task/advance/update API)."""
    if not enabled:
        return PlainProgress(enabled=False)
    if sys.stdout.isatty() and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    return PlainProgress()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class PlainProgress:
    """Timed progress lines on stderr for logs."""

    def __init__(self, enabled: bool = True, interval: float | None = None) -> None:
        self.enabled = enabled
        self.interval = interval if interval is not None else float(os.environ.get("HARNESS_PROGRESS_INTERVAL", 20))
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._tasks.clear()

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        task_id = len(self._tasks) + 1
        now = time.monotonic()
        self._tasks[task_id] = {"label": description, "total": total, "done": 0.0, "t0": now, "last": now,
                                "finished": False}
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, completed: float | None = None, advance: float = 0,
               description: str | None = None, **_: Any) -> None:
        t = self._tasks.get(task_id)
        if t is None or not self.enabled:
            return
        t["done"] = completed if completed is not None else t["done"] + advance
        if description is not None:
            t["label"] = description
        now = time.monotonic()
        finished = t["total"] is not None and t["done"] >= t["total"]
        if (finished and not t["finished"]) or now - t["last"] >= self.interval:
            t["last"], t["finished"] = now, finished
            print(self.line(t, now), file=sys.stderr, flush=True)

    @staticmethod
    def line(t: dict[str, Any], now: float) -> str:
        elapsed = max(now - t["t0"], 1e-9)
        rate = t["done"] / elapsed
        done, total = t["done"], t["total"]
        text = f"{t['label']}: {done:g}/{total:g}" if total else f"{t['label']}: {done:g}"
        if total:
            text += f" ({100 * done / total:.0f}%)"
        text += f", {rate:.2f}/s" if rate < 10 else f", {rate:.0f}/s"
        if total and done >= total:
            text += f", done in {_clock(elapsed)}"
        elif total and rate > 0:
            text += f", ETA {_clock((total - done) / rate)}"
        return text
