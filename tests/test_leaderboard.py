"""Leaderboard specs: validation, and a full build -> eval -> statistics -> render cycle."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import small_board_spec

from harness.errors import HarnessError
from harness.report.leaderboard import load_spec, run_leaderboard

CONTRACT = ["checkpoint", "task", "n", "score", "ci_low", "ci_high", "delta", "delta_ci_low",
            "delta_ci_high", "p_value", "rank_band"]


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lb.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("baseline: a\ncheckpoints: [a]\ntasks: [geoqa]\ncolour: red\n", "unknown key(s) colour"),
        ("checkpoints: [a]\ntasks: [geoqa]\n", "missing required key 'baseline'"),
        ("baseline: b\ncheckpoints: [a]\ntasks: [geoqa]\n", "baseline 'b' is not one of the checkpoints"),
        ("baseline: a\ncheckpoints: [a, a]\ntasks: [geoqa]\n", "unique"),
        ("baseline: a\ncheckpoints: [a]\ntasks: []\n", "no tasks"),
        ("baseline: a\ncheckpoints: [a]\ntasks: [geoqa]\nblind: [z]\n", "blind entry 'z'"),
        ("baseline: a\ncheckpoints: [a]\ntasks: [geoqa]\ngeneration: {temp: 1}\n", "unknown generation key"),
        ("baseline: a\ncheckpoints: [{name: b, recipe: {base: a}}, a]\ntasks: [geoqa]\n", "needs at least a 'trainer'"),
        ("baseline: a\ncheckpoints: [a]\ntasks: [geoqa]\nlimit: 0\n", "limit must be a positive integer"),
        ("baseline: [a\n", "not valid YAML"),
    ],
)
def test_spec_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = _spec(tmp_path, text)
    with pytest.raises(HarnessError) as err:
        load_spec(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_unknown_task_in_spec(tmp_path, random_tiny):
    spec = load_spec(_spec(tmp_path, f"baseline: a\ncheckpoints: [{{name: a, path: {random_tiny}}}]\ntasks: [nope]\n"))
    with pytest.raises(HarnessError, match="unknown task 'nope'"):
        run_leaderboard(spec)


def test_leaderboard_end_to_end(tmp_path, random_tiny):
    spec = load_spec(small_board_spec(tmp_path, random_tiny, limit=16, bootstrap=2000))
    df = run_leaderboard(spec)
    out = tmp_path / "small"
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "forest.png"):
        assert (out / name).stat().st_size > 0, name
    with (out / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(CONTRACT)] == CONTRACT
    assert {(r["checkpoint"], r["task"]) for r in rows} == {
        (c, t) for c in ("base", "same", "base+blind") for t in ("geoqa", "mmbench")
    }
    # The same weights under another name: identical scores, a zero difference, one rank band.
    same = df[df.checkpoint == "same"].set_index("task")
    base = df[df.checkpoint == "base"].set_index("task")
    assert (same.score == base.score).all() and (same.delta == 0).all()
    assert (same.rank_band == base.rank_band).all()
    assert (tmp_path / "runs" / "base+blind").exists() is False  # blind runs live beside, not as a checkpoint
    assert (tmp_path / "runs" / "base" / "geoqa-blind" / "samples.jsonl").exists()

    # An unchanged re-run reads everything back without loading a model.
    import harness.models.backend as backend_module

    def refuse(*a, **k):
        raise AssertionError("the model was loaded on an unchanged re-run")

    original = backend_module.HFBackend
    backend_module.HFBackend = refuse
    try:
        again = run_leaderboard(load_spec(tmp_path / "lb.yaml"))
    finally:
        backend_module.HFBackend = original
    assert again.equals(df)


def test_a_built_recipe_row_is_rebuilt_only_after_its_folder_goes(tmp_path, random_tiny):
    import shutil

    built = []

    def fake_build(c):  # stands in for trainers.recipes.build_recipe: "trains" by copying a model
        built.append(c.name)
        shutil.copytree(random_tiny, c.ckpt)

    def spec(epochs: int):
        return load_spec(_spec(tmp_path, f"""
baseline: base
checkpoints:
  - {{name: base, path: {random_tiny}}}
  - {{name: tuned, path: {tmp_path / 'built' / 'tuned'}, recipe: {{trainer: sft, base: {random_tiny}, config: {{epochs: {epochs}}}}}}}
tasks: [geoqa]
output_dir: {tmp_path / 'runs'}
limit: 4
bootstrap: 200
"""))

    run_leaderboard(spec(1), build_recipe=fake_build)
    run_leaderboard(spec(1), build_recipe=fake_build)
    assert built == ["tuned"]  # built once, then reused: its stamp matches the recipe
    with pytest.raises(HarnessError, match=r"checkpoint tuned: .*tuned was built from a different recipe; delete"):
        run_leaderboard(spec(2), build_recipe=fake_build)
    shutil.rmtree(tmp_path / "built" / "tuned")
    run_leaderboard(spec(2), build_recipe=fake_build)
    assert built == ["tuned", "tuned"]
