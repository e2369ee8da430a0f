"""The eval loop: sample logs, summary, cache, resume after a kill, repeated sampling, blind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BUNDLED, HARNESS, REPO
from harness.core.runner import EvalSettings, evaluate
from harness.core.store import GenerationCache
from harness.core.task import get_task
from harness.core.types import GenConfig


class CountingBackend:
    """The real backend, counting how often the model is asked for anything."""

    def __init__(self, path: Path) -> None:
        from harness.models.backend import HFBackend
        from harness.models.checkpoints import resolve_checkpoint

        self.inner = HFBackend(resolve_checkpoint(str(path)))
        self.name, self.content_hash = self.inner.name, self.inner.content_hash
        self.calls = 0

    def generate(self, *a, **k):
        self.calls += 1
        return self.inner.generate(*a, **k)

    def choice_losses(self, *a, **k):
        self.calls += 1
        return self.inner.choice_losses(*a, **k)


@pytest.fixture(scope="module")
def backend(random_tiny):
    return CountingBackend(random_tiny)


def _run(backend, tmp_path, settings=EvalSettings(limit=12, batch_size=4), task_name="geoqa"):
    task = get_task(task_name)
    items = task.load(BUNDLED, "test")[: settings.limit]  # the caller limits (harness.session does)
    cache = GenerationCache(tmp_path / ".cache" / "gen.sqlite")
    try:
        return evaluate(backend, task, items, settings, tmp_path / "run", cache, data_dir=BUNDLED).summary
    finally:
        cache.close()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_writes_samples_and_summary(backend, tmp_path):
    summary = _run(backend, tmp_path)
    rows = _lines(tmp_path / "run" / "samples.jsonl")
    assert len(rows) == 12 and len({r["key"] for r in rows}) == 12
    for r in rows:
        assert {"id", "sample", "key", "output", "extracted", "score", "category"} <= r.keys()
        assert r["score"] in (0.0, 1.0)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk == summary
    assert summary["task"] == "geoqa" and summary["n"] == 12
    assert summary["ci_low"] <= summary["score"] <= summary["ci_high"]
    assert summary["score"] == pytest.approx(100 * sum(r["score"] for r in rows) / 12)
    assert summary["unparsed"] == sum(r["extracted"] is None for r in rows)
    assert summary["checkpoint"]["hash"] == backend.content_hash
    assert summary["generation"]["max_new_tokens"] == get_task("geoqa").max_new_tokens
    assert {"torch", "transformers"} <= summary["versions"].keys()
    assert summary["data"]["hash"] and summary["ci_method"] == "wilson"  # 0/1 items, no clusters


def test_rerun_is_served_from_the_log_and_the_cache(backend, tmp_path):
    first = _run(backend, tmp_path)
    calls = backend.calls
    assert _run(backend, tmp_path) == first
    assert backend.calls == calls  # nothing regenerated
    (tmp_path / "run" / "samples.jsonl").unlink()  # the log is gone, the cache is not
    assert _run(backend, tmp_path)["score"] == first["score"]
    assert backend.calls == calls


def test_torn_stale_and_duplicate_lines_are_dropped(backend, tmp_path):
    first = _run(backend, tmp_path)
    log = tmp_path / "run" / "samples.jsonl"
    rows = _lines(log)
    with log.open("a") as f:
        f.write(json.dumps(rows[0]) + "\n")  # duplicate
        f.write(json.dumps({**rows[1], "key": "stale"}) + "\n")  # from other settings
        f.write('{"id": "3", "sample": 0, "out')  # torn by a kill
    again = _run(backend, tmp_path)
    assert again["score"] == first["score"] and again["n"] == 12
    assert sorted(r["key"] for r in _lines(log)) == sorted(r["key"] for r in rows)


def test_limit_growth_only_generates_new_items(backend, tmp_path):
    _run(backend, tmp_path, EvalSettings(limit=6, batch_size=4))
    calls = backend.calls
    summary = _run(backend, tmp_path, EvalSettings(limit=12, batch_size=4))
    assert summary["n"] == 12
    assert backend.calls - calls == 2  # 6 new items in batches of 4


def test_repeated_sampling(backend, tmp_path):
    settings = EvalSettings(gen=GenConfig(temperature=1.0, seed=3), n_samples=3, limit=5, batch_size=4)
    summary = _run(backend, tmp_path, settings)
    rows = _lines(tmp_path / "run" / "samples.jsonl")
    assert len(rows) == 15 and summary["n"] == 5 and summary["n_samples"] == 15
    assert sorted({(r["id"], r["sample"]) for r in rows}) == sorted((r["id"], r["sample"]) for r in rows)
    assert {r["sample"] for r in rows} == {0, 1, 2}
    calls = backend.calls
    _run(backend, tmp_path, settings)
    assert backend.calls == calls


def test_blind_changes_keys(backend, tmp_path):
    _run(backend, tmp_path / "a")
    _run(backend, tmp_path / "b", EvalSettings(limit=12, batch_size=4, blind=True))
    seeing = {r["key"] for r in _lines(tmp_path / "a" / "run" / "samples.jsonl")}
    blind = {r["key"] for r in _lines(tmp_path / "b" / "run" / "samples.jsonl")}
    assert not seeing & blind


def test_greedy_with_several_samples_is_refused():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="temperature"):
        EvalSettings(n_samples=4)


def _eval_cmd(ckpt: Path, out: Path) -> list[str]:
    return [*HARNESS, "eval", "--ckpt", str(ckpt), "--tasks", "geoqa", "--limit", "60", "--batch-size", "2",
            "--output-dir", str(out)]


def test_kill_and_resume_gives_the_same_summary(random_tiny, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HARNESS_DATA", None)
    clean = subprocess.run(_eval_cmd(random_tiny, tmp_path / "clean"), cwd=REPO, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    name = random_tiny.name
    reference = json.loads((tmp_path / "clean" / name / "geoqa" / "summary.json").read_text())

    out = tmp_path / "killed"
    log = out / name / "geoqa" / "samples.jsonl"
    proc = subprocess.Popen(_eval_cmd(random_tiny, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(log.read_text().splitlines())
    assert 10 <= partial < 60, "the kill should land mid-run"
    assert not (out / name / "geoqa" / "summary.json").exists()  # nothing half-written

    resumed = subprocess.run(_eval_cmd(random_tiny, out), cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / name / "geoqa" / "summary.json").read_text())
    for key in ("n", "score", "ci_low", "ci_high", "unparsed", "categories"):
        assert summary[key] == reference[key], key
    rows = _lines(log)
    assert len(rows) == 60 and len({(r["id"], r["sample"]) for r in rows}) == 60


def test_items_with_identical_prompts_keep_their_own_samples(backend, tmp_path):
    import dataclasses

    task = get_task("geoqa")
    first = task.load(BUNDLED, "test")[0]
    twins = [first, dataclasses.replace(first, id=first.id + "-twin")]
    cache = GenerationCache(tmp_path / "gen.sqlite")
    summary = evaluate(backend, task, twins, EvalSettings(), tmp_path / "run", cache).summary
    cache.close()
    rows = _lines(tmp_path / "run" / "samples.jsonl")
    assert summary["n"] == 2 and sorted(r["id"] for r in rows) == sorted(it.id for it in twins)
