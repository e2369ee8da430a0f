"""Shared fixtures: where the real benchmark files are, the bundled data, a small random VLM."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
BUNDLED = REPO / "data"
HARNESS = [sys.executable, "-m", "harness.cli"]


def real_or_skip(*parts: str) -> Path:
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real benchmark files not present ({path})")
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `harness ...` in a fresh process, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "HARNESS_DATA"}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run([*HARNESS, *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=600)


def checkpoint_weights(path: Path) -> dict:
    """State dict of a checkpoint as evaluation loads it (an adapter merged into its base)."""
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    backend = HFBackend(resolve_checkpoint(str(path)), device="cpu")
    return {k: v.detach().clone() for k, v in backend.model.state_dict().items()}


def geoqa_inputs(backend, k: int = 3) -> dict:
    """`backend`'s batched, left-padded inputs for k bundled geoqa test items of different prompt lengths."""
    from harness.core.images import open_image
    from harness.core.task import get_task

    task = get_task("geoqa")
    # Spread over prompt lengths (shortest .. longest of the first 50) so the batch really is padded.
    pool = sorted(task.load(BUNDLED, "test")[:50], key=lambda it: (len(task.prompt(it)), it.id))
    items = [pool[round(i * (len(pool) - 1) / max(k - 1, 1))] for i in range(k)]
    return backend.batch_inputs([task.prompt(it) for it in items], [[open_image(r) for r in it.images] for it in items])


def small_board_spec(tmp_path: Path, ckpt: Path, limit: int, bootstrap: int, generation: str = "{batch_size: 8}") -> Path:
    """A leaderboard spec `small`: base and same (one checkpoint twice) and base+blind on geoqa and mmbench."""
    path = tmp_path / "lb.yaml"
    path.write_text(f"""
name: small
baseline: base
checkpoints:
  - {{name: base, path: {ckpt}}}
  - {{name: same, path: {ckpt}}}
blind: [base]
tasks: [geoqa, mmbench]
generation: {generation}
output_dir: {tmp_path / 'runs'}
limit: {limit}
bootstrap: {bootstrap}
""")
    return path


@pytest.fixture(scope="session")
def random_tiny(tmp_path_factory) -> Path:
    """A small random-weight LLaVA with a tokenizer trained on the bundled prompts."""
    from harness.core.task import get_task
    from trainers.tiny_model import build_tiny, build_tokenizer

    task = get_task("geoqa")
    texts = [task.prompt(it) + " " + task.target_text(it) for it in task.load(BUNDLED, "test")[:200]]
    tok = build_tokenizer(texts, vocab_size=400)
    return build_tiny("llava", tok, tmp_path_factory.mktemp("ckpt") / "random-tiny", image_size=32,
                      patch_size=8, hidden=32, layers=1, heads=2, vision_hidden=16, vision_layers=1, vision_heads=2)


@pytest.fixture(scope="session")
def small_backends(tmp_path_factory) -> dict:
    """Loaded HFBackends of small random LLaVA and Qwen2-VL checkpoints (2 layers), by arch."""
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from trainers.tiny_model import build_tiny, build_tokenizer

    tok = build_tokenizer(["Which angle is it? A. 30 B. 60", "Answer: B because"] * 20, vocab_size=300)
    root = tmp_path_factory.mktemp("small")
    small = dict(image_size=32, patch_size=8, hidden=32, layers=2, heads=2, vision_hidden=16, vision_layers=1,
                 vision_heads=2)
    return {arch: HFBackend(resolve_checkpoint(str(build_tiny(arch, tok, root / arch, **small))), device="cpu")
            for arch in ("llava", "qwen2vl")}
