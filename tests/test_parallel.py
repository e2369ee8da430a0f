"""Data-parallel eval: shard assignment, merging shard logs, per-shard resume, a 2-process launch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUNDLED, REPO
from harness.errors import HarnessError
from harness.core.parallel import Shard, merge_samples, shard_logs, shard_positions
from harness.models.mock import MockBackend
from harness.core.runner import EvalSettings, evaluate
from harness.core.store import GenerationCache
from harness.core.task import get_task
from harness.core.types import GenConfig


# ---- pure functions --------------------------------------------------------------------------------
@pytest.mark.parametrize("n,world", [(0, 2), (1, 3), (7, 2), (10, 3), (12, 4)])
def test_shards_partition_the_items(n, world):
    lengths = [(i * 37) % 11 for i in range(n)]
    shards = [shard_positions(lengths, r, world) for r in range(world)]
    assert sorted(p for s in shards for p in s) == list(range(n))  # every item once
    assert all(s == sorted(s) for s in shards)  # item order kept within a shard
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shards_mix_short_and_long_prompts():
    lengths = [400, 3, 200, 1, 300, 2, 100, 4]  # contiguous halves would give one rank all the long ones
    first, second = (shard_positions(lengths, r, 2) for r in range(2))
    assert sum(lengths[i] for i in first) == sum(lengths[i] for i in second) == 505


def test_bad_rank_is_refused():
    with pytest.raises(ValueError):
        shard_positions([1, 2], 2, 2)
    with pytest.raises(HarnessError, match="rank"):
        Shard(rank=3, world=2)


def test_merge_dedupes_orders_and_drops_foreign_keys():
    order = {"a0": (0, 0), "a1": (0, 1), "b0": (1, 0), "c0": (2, 0)}
    final = [{"key": "b0", "output": "old"}, {"key": "stale", "output": "x"}]
    shard0 = [{"key": "c0", "output": "c"}, {"key": "a1", "output": "a1"}]
    shard1 = [{"key": "a0", "output": "a0"}, {"key": "b0", "output": "dup"}, {"key": "a0", "output": "dup"}]
    merged = merge_samples([final, shard0, shard1], order)
    assert [r["key"] for r in merged] == ["a0", "a1", "b0", "c0"]
    assert [r["output"] for r in merged] == ["a0", "a1", "old", "c"]  # the first row of a key wins


# ---- evaluate() with simulated ranks ------------------------------------------------------------------
def EchoBackend() -> MockBackend:
    """Replies depend on the prompt and the sample index only (as a seeded draw would)."""
    return MockBackend(lambda req: f"Answer: {'ABCD'[len(req.text) % 4]} ({req.k})", name="echo",
                       content_hash="0123456789abcdef")


def _eval(backend, tmp_path: Path, shard: Shard | None = None, limit: int = 9, n_samples: int = 1):
    task = get_task("geoqa")
    settings = EvalSettings(gen=GenConfig(temperature=0.7 if n_samples > 1 else 0.0), n_samples=n_samples,
                            limit=limit, batch_size=4)
    cache = GenerationCache(tmp_path / "cache.sqlite")
    try:
        result = evaluate(backend, task, task.load(BUNDLED, "test")[:limit], settings, tmp_path / "run", cache, shard=shard)
        return result and result.summary  # None on ranks other than 0
    finally:
        cache.close()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sharded_run_merges_to_the_single_process_samples(tmp_path):
    single = _eval(EchoBackend(), tmp_path / "single", n_samples=2)
    reference = _rows(tmp_path / "single" / "run" / "samples.jsonl")

    out = tmp_path / "multi"
    rank1 = _eval(EchoBackend(), out, Shard(rank=1, world=2), n_samples=2)  # ranks in turn, barrier a no-op
    assert rank1 is None  # only rank 0 summarizes
    assert [p.name for p in shard_logs(out / "run")] == ["samples.rank1-of2.jsonl"]
    summary = _eval(EchoBackend(), out, Shard(rank=0, world=2), n_samples=2)
    merged = _rows(out / "run" / "samples.jsonl")
    assert shard_logs(out / "run") == []  # merged shards are removed
    assert len(merged) == 18 and len({(r["id"], r["sample"]) for r in merged}) == 18
    assert merged == reference  # the same lines in the same (item) order as one process writes
    ids = [r["id"] for r in merged if r["sample"] == 0]
    task = get_task("geoqa")
    assert ids == [it.id for it in task.load(BUNDLED, "test")[:9]]  # item order restored
    assert {k: summary[k] for k in ("n", "score", "ci_low", "ci_high")} == \
        {k: single[k] for k in ("n", "score", "ci_low", "ci_high")}
    assert summary["data_parallel"]["shard_lines"] == {"samples.rank0-of2.jsonl": 10, "samples.rank1-of2.jsonl": 8}


def test_a_rank_resumes_from_its_shard(tmp_path):
    first = EchoBackend()
    _eval(first, tmp_path, Shard(rank=1, world=2), limit=6)
    log = tmp_path / "run" / "samples.rank1-of2.jsonl"
    kept = log.read_text().splitlines()[:2]
    log.write_text("\n".join(kept) + '\n{"id": "torn', encoding="utf-8")  # killed mid-line
    (tmp_path / "cache.sqlite").unlink()  # force the shard log to be what resumes
    again = EchoBackend()
    _eval(again, tmp_path, Shard(rank=1, world=2), limit=6)
    assert len(again.requests) == len(first.requests) - 2  # only the samples the shard lost
    assert len(_rows(log)) == 3


def test_merge_refuses_a_missing_shard(tmp_path):
    with pytest.raises(HarnessError, match="missing after merging"):
        _eval(EchoBackend(), tmp_path, Shard(rank=0, world=2), limit=6)  # rank 1 never ran


# ---- a real 2-process launch ----------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """`accelerate launch --num_processes 2 -m harness eval` == the single-process run. On a machine
    without GPUs `--multi_gpu` is what starts several processes (`--cpu` starts one); each rank
    then joins a gloo process group on the CPU."""
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DATA"}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a shared CPU
    args = ["eval", "--ckpt", "tiny", "--tasks", "geoqa", "--limit", "6", "--batch-size", "2"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "harness"]
    for cmd, out in (([sys.executable, "-m", "harness"], "one"), (launcher, "two")):
        done = subprocess.run([*cmd, *args, "--output-dir", str(tmp_path / out)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = (_rows(tmp_path / out / "tiny" / "geoqa" / "samples.jsonl") for out in ("one", "two"))
    assert sorted((r["id"], r["output"]) for r in two) == sorted((r["id"], r["output"]) for r in one)
    assert len(two) == 6
    summary = json.loads((tmp_path / "two" / "tiny" / "geoqa" / "summary.json").read_text())
    assert summary["n"] == 6
    assert summary["data_parallel"] == {"world_size": 2, "shard_lines": {"samples.rank0-of2.jsonl": 3,
                                                                         "samples.rank1-of2.jsonl": 3}}


# ---- treatments under a launcher ------------------------------------------------------------------------
def test_deepspeed_config_passes_through_or_names_the_install(tmp_path):
    import importlib.util

    from trainers.common import load_config, trl_args
    from trainers.sft import SFTConfig

    with pytest.raises(HarnessError, match="deepspeed config file not found"):
        load_config(SFTConfig, overrides=[f"deepspeed={tmp_path / 'nope.json'}"])
    ds = tmp_path / "ds_zero2.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}))
    cfg = load_config(SFTConfig, overrides=[f"deepspeed={ds}"])
    assert cfg.deepspeed == str(ds)
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed: the pass-through needs a launched GPU run")
    with pytest.raises(HarnessError, match="pip install deepspeed"):
        trl_args(dict, cfg, tmp_path / "work")  # refused before any TrainingArguments is built


ACCELERATE_TWO = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
TORCHRUN_TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _train_two_processes(launcher: list[str], treatment: str, out, *fields: str) -> subprocess.CompletedProcess:
    """`harness train <treatment>` on tiny's geoqa (8 questions, 2 steps) under a 2-process launcher."""
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DATA"}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a shared CPU
    cmd = [*launcher, "-m", "harness", "train", treatment, "--base", "tiny", "--task", "geoqa", "--out", str(out),
           "limit=8", "max_steps=2", "batch_size=2", *fields]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sft_trains_under_two_processes(tmp_path):
    """TRL's trainer runs data parallel under accelerate; only rank 0 publishes the checkpoint."""
    out = tmp_path / "sft"
    done = _train_two_processes(ACCELERATE_TWO, "sft", out, "logging_steps=1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # no staging folder left by rank 1
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["steps"] == 2 and (out / "adapter_model.safetensors").is_file()


SHARE_SCRIPT = '''
import json, os, sys
from harness.errors import HarnessError
from harness.core.parallel import computed_on_main

def fail():
    raise HarnessError("mpo: no preference pairs")

value = computed_on_main(lambda: {"rank": int(os.environ["RANK"]), "pid": os.getpid()})
# one file per rank: two ranks printing to one pipe can interleave their lines
with open(f"got{os.environ['RANK']}.json", "w") as f:
    json.dump(value, f)
if sys.argv[1] == "fail":
    computed_on_main(fail)
'''


def _two_ranks(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "share.py"
    script.write_text(SHARE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [*TORCHRUN_TWO, str(script), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_training_data_built_on_rank_0_reaches_every_rank(tmp_path):
    """What a treatment samples on rank 0 is what every rank trains on; a failure there ends all ranks."""
    done = _two_ranks(tmp_path, "ok")
    assert done.returncode == 0, done.stderr[-2000:]
    got = [json.loads((tmp_path / f"got{rank}.json").read_text()) for rank in (0, 1)]
    assert got[0] == got[1] and got[0]["rank"] == 0

    failed = _two_ranks(tmp_path, "fail")
    assert failed.returncode != 0
    assert "rank 0 failed while building the training data: mpo: no preference pairs" in failed.stderr


@pytest.mark.slow
def test_mpo_trains_under_two_processes_on_rank_0_pairs(tmp_path):
    out = tmp_path / "mpo"
    done = _train_two_processes(TORCHRUN_TWO, "mpo", out, "samples_per_question=2")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 2 and manifest["data"]["pairs"] > 0
