"""Leaderboard specs: validation, and a full build -> eval -> statistics -> render cycle."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import run_cli, small_board_spec

from harness.errors import HarnessError
from harness.report.leaderboard import load_spec, run_leaderboard

CONTRACT = ["checkpoint", "task", "n", "score", "ci_low", "ci_high", "ci_method", "delta", "delta_ci_low",
            "delta_ci_high", "p_value", "p_adjusted", "a_only", "b_only", "mde", "endpoint", "family_size",
            "rank", "rank_low", "rank_high"]


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
    # The same weights under another name: identical scores, a zero difference, one rank interval.
    same = df[df.checkpoint == "same"].set_index("task")
    base = df[df.checkpoint == "base"].set_index("task")
    assert (same.score == base.score).all() and (same.delta == 0).all()
    assert (same[["rank", "rank_low", "rank_high"]] == base[["rank", "rank_low", "rank_high"]]).all().all()
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


def test_a_changed_interval_method_changes_the_render_key(monkeypatch):
    """The render cache is keyed by the statistics code too: a new seeded-row method (stats/seeds.py)
    or rank method must re-render a board whose samples did not change."""
    from pathlib import Path as P

    from harness.report.leaderboard import render_key

    scores = [{"a": {"geoqa": [1.0, 0.0]}}]
    before = render_key(scores, "a", 100, 0, "t")
    for module in ("seeds.py", "selection.py", "board.py"):
        real = P.read_bytes
        monkeypatch.setattr(P, "read_bytes", lambda self, real=real, m=module: real(self) + (b"#" if self.name == m else b""))
        assert render_key(scores, "a", 100, 0, "t") != before, module
        monkeypatch.setattr(P, "read_bytes", real)
    assert render_key(scores, "a", 100, 0, "t") == before


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


def test_seeds_row_builds_one_checkpoint_per_seed_and_scores_their_mean(tmp_path, random_tiny):
    import shutil

    built = []

    def fake_build(c):  # one build per seed, each with the recipe's config seed set
        built.append((c.name, c.ckpt, c.recipe["config"]["seed"]))
        shutil.copytree(random_tiny, c.ckpt)

    text = f"""
baseline: base
checkpoints:
  - {{name: base, path: {random_tiny}}}
  - {{name: tuned, path: {tmp_path / 'built' / 'tuned'}, seeds: [3, 1],
     recipe: {{trainer: sft, base: {random_tiny}, config: {{epochs: 1}}}}}}
tasks: [geoqa]
output_dir: {tmp_path / 'runs'}
limit: 8
bootstrap: 200
"""
    df = run_leaderboard(load_spec(_spec(tmp_path, text)), build_recipe=fake_build)
    assert built == [("tuned", str(tmp_path / "built" / "tuned" / f"seed{k}"), k) for k in (3, 1)]
    row = df.set_index("checkpoint").loc["tuned"]
    base = df.set_index("checkpoint").loc["base"]
    assert row.seeds == 2  # at 0% / 100% the bootstrap has no spread: Wilson over the units instead
    assert row.ci_method == ("wilson" if row.score in (0.0, 100.0) else "seed-components")
    assert row.score == base.score == row.seed_min == row.seed_max  # the same weights at every seed
    assert (tmp_path / "runs" / "tuned" / "seed3" / "geoqa" / "samples.jsonl").is_file()
    # The recipe's own seeds mean the same for a one-checkpoint trainer.
    spec = load_spec(_spec(tmp_path, text.replace("seeds: [3, 1],\n     recipe: {", "recipe: {seeds: [3, 1], ")))
    assert spec.checkpoints[1].seeds == [3, 1] and "seeds" not in spec.checkpoints[1].recipe


def test_seeds_flag_replaces_every_seeded_rows_seeds_and_renders_beside(tmp_path, random_tiny):
    from harness.report.spec import with_seeds

    text = f"""
name: board
baseline: base
checkpoints:
  - {{name: base, path: {random_tiny}}}
  - {{name: tuned, path: {tmp_path / 'built' / 'tuned'}, seeds: [3],
     recipe: {{trainer: sft, base: {random_tiny}, config: {{epochs: 1}}}}}}
  - {{name: once, path: {tmp_path / 'built' / 'once'}, recipe: {{trainer: sft, base: {random_tiny}}}}}
tasks: [geoqa]
"""
    spec = load_spec(_spec(tmp_path, text))
    more = with_seeds(spec, [3, 4, 5])
    assert [c.seeds for c in more.checkpoints] == [None, [3, 4, 5], None]
    assert [b.ckpt for b in more.checkpoints[1].builds()] == [str(tmp_path / "built" / "tuned" / f"seed{k}") for k in (3, 4, 5)]
    assert more.out_dir == spec.out_dir.parent / "board-seeds" and spec.checkpoints[1].seeds == [3]
    res = run_cli("leaderboard", "--spec", str(_spec(tmp_path, text)), "--seeds", "1,x")
    assert res.returncode == 2 and "--seeds '1,x': give distinct integers" in res.stderr


def test_runs_row_scores_without_a_model(tmp_path, random_tiny):
    text = f"""
baseline: base
checkpoints:
  - {{name: base, path: {random_tiny}}}
tasks: [geoqa, mmbench]
output_dir: {tmp_path / 'runs'}
limit: 8
bootstrap: 200
"""
    run_leaderboard(load_spec(_spec(tmp_path, text)))
    # The scored runs of another tool: the same samples, in DIR/<task>/samples.jsonl.
    import shutil

    shutil.copytree(tmp_path / "runs" / "base", tmp_path / "theirs")
    import harness.models.backend as backend_module

    def refuse(*a, **k):
        raise AssertionError("a runs row loaded a model")

    spec = load_spec(_spec(tmp_path, text.replace("  - {name: base", f"  - {{name: theirs, runs: {tmp_path / 'theirs'}}}\n  - {{name: base")))
    original, backend_module.HFBackend = backend_module.HFBackend, refuse
    try:
        df = run_leaderboard(spec)
    finally:
        backend_module.HFBackend = original
    rows = df.set_index(["checkpoint", "task"])
    for task in ("geoqa", "mmbench"):
        assert rows.loc[("theirs", task), "delta"] == 0 and rows.loc[("theirs", task), "p_value"] == 1.0
    shutil.rmtree(tmp_path / "theirs" / "mmbench")
    with pytest.raises(HarnessError, match=r"theirs/mmbench/samples.jsonl not found"):
        run_leaderboard(load_spec(spec.path))


@pytest.mark.parametrize(
    "row, message",
    [
        ("{name: b, runs: r, path: p}", "{name, runs: DIR} and nothing else"),
        ("{name: b, seeds: [1, 1], recipe: {trainer: sft}}", "distinct integers"),
        ("{name: b, seeds: [1], path: p}", "seeds need a recipe"),
        ("{name: b, seeds: [1], recipe: {trainer: average, members: {trainer: sft}}}", "seeds need a recipe"),
        ("{name: b, seeds: [1], recipe: {trainer: average, include: [x, y]}}", "a seeded average takes each seed's builds"),
        ("{name: b, colour: red, path: p}", "unknown key(s) colour"),
        ("{name: b, seeds: [1], path: elsewhere/iter1, recipe: {trainer: self_train, out: st}}",
         "a seeded recipe with out needs the row's path inside out"),
    ],
)
def test_seeds_and_runs_rows_are_checked(tmp_path, row, message):
    path = _spec(tmp_path, f"baseline: a\ncheckpoints: [a, {row}]\ntasks: [geoqa]\n")
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(path)


def test_seeded_build_of_a_recipe_with_out_writes_each_seeds_iterations(tmp_path, monkeypatch):
    """self_train with seeds: one build per seed, each writing <out>/seed<k>/iter1..K; the rows
    that share the recipe share each seed's build, and every (row, seed) has its own run folder."""
    from harness.report.leaderboard import build_checkpoints, plan_board

    out = tmp_path / "st"
    recipe = f"&st {{trainer: self_train, base: b, task: geoqa, out: {out}, config: {{iterations: 2}}}}"
    path = _spec(tmp_path, f"baseline: a\ncheckpoints:\n  - a\n"
                           f"  - {{name: i1, seeds: [0, 1], path: {out}/iter1, recipe: {recipe}}}\n"
                           f"  - {{name: i2, seeds: [0, 1], path: {out}/iter2, recipe: *st}}\ntasks: [geoqa]\n")
    spec = load_spec(path)
    i1, i2 = spec.checkpoints[1:]
    assert [b.ckpt for b in i2.builds()] == [str(out / "seed0" / "iter2"), str(out / "seed1" / "iter2")]
    assert [(b.recipe["out"], b.recipe["config"]) for b in i1.builds()] == [
        (str(out / "seed0"), {"iterations": 2, "seed": 0}), (str(out / "seed1"), {"iterations": 2, "seed": 1})]
    built = []

    def build_recipe(c):  # stands in for self_train: one run writes every iteration of its seed
        built.append(c.recipe["out"])
        for k in (1, 2):
            (Path(c.recipe["out"]) / f"iter{k}").mkdir(parents=True)

    import harness.report.spec as spec_module

    monkeypatch.setattr(spec_module, "recipe_fingerprint", lambda c, data=None: {"recipe": c.recipe})  # no base to hash
    build_checkpoints(spec, build_recipe)
    assert built == [str(out / "seed0"), str(out / "seed1")]  # i2's builds were made by i1's
    folders = [r.run_dir for r in plan_board(spec).runs]
    assert len(set(folders)) == len(folders) == 5


def test_a_seeded_chain_reads_each_seeds_builds(tmp_path, monkeypatch):
    """Rows that read seeded rows (mpo from sft, an average of seeded members) build seed k from those
    rows' seed-k builds, after them; `--seeds` carries the whole chain to the new seeds."""
    from harness.report.leaderboard import build_checkpoints
    from harness.report.spec import with_seeds

    b = tmp_path / "built"
    path = _spec(tmp_path, f"""baseline: a
checkpoints:
  - a
  - {{name: sft, seeds: [0], path: {b}/sft, recipe: {{trainer: sft, base: a}}}}
  - {{name: m2, seeds: [0], path: {b}/m2, recipe: {{trainer: sft, base: a}}}}
  - {{name: avg, seeds: [0], path: {b}/avg, recipe: {{trainer: average, base: a, include: [{b}/sft, {b}/m2]}}}}
  - {{name: mpo, seeds: [0], path: {b}/mpo, recipe: {{trainer: mpo, base: {b}/sft/}}}}
  - {{name: st3, seeds: [0], path: {b}/st/iter3, recipe: {{trainer: self_train, base: {b}/avg, out: {b}/st}}}}
  - {{name: dpo, seeds: [0], path: {b}/dpo, recipe: {{trainer: self_critique, base: {b}/st/iter3}}}}
tasks: [geoqa]
""")
    spec = with_seeds(load_spec(path), [0, 2])
    rows = {c.name: c for c in spec.checkpoints}
    assert [x.recipe["include"] for x in rows["avg"].builds()] == [[f"{b}/sft/seed{k}", f"{b}/m2/seed{k}"] for k in (0, 2)]
    assert [x.recipe["base"] for x in rows["mpo"].builds()] == [f"{b}/sft/seed{k}" for k in (0, 2)]
    assert [x.recipe["base"] for x in rows["st3"].builds()] == [f"{b}/avg/seed{k}" for k in (0, 2)]
    assert [x.recipe["base"] for x in rows["dpo"].builds()] == [f"{b}/st/seed{k}/iter3" for k in (0, 2)]
    assert [x.recipe["config"]["seed"] for x in rows["avg"].builds()] == [0, 2]
    built = []

    def build_recipe(c):
        for ref in [c.recipe["base"], *c.recipe.get("include", [])]:
            assert ref == "a" or Path(ref).is_dir(), f"{c.name} seed {c.seed} built before {ref}"
        built.append((c.name, c.seed))
        Path(c.ckpt).mkdir(parents=True)

    import harness.report.spec as spec_module

    monkeypatch.setattr(spec_module, "recipe_fingerprint", lambda c, data=None: {"recipe": c.recipe})  # no base to hash
    build_checkpoints(spec, build_recipe)
    assert sorted(built) == sorted((n, k) for n in ("sft", "m2", "avg", "mpo", "st3", "dpo") for k in (0, 2))


@pytest.mark.parametrize(
    "rows, message",
    [
        ("{name: s, seeds: [0], recipe: {trainer: sft}}, {name: m, recipe: {trainer: mpo, base: checkpoints/built/s}}",
         "checkpoint 'm': it reads checkpoints/built/s, the seeded row 's', which has one build per seed; give 'm' "
         "seeds too, or name one build, e.g. checkpoints/built/s/seed0"),
        ("{name: s, seeds: [0], recipe: {trainer: sft}}, {name: m, seeds: [0, 1], recipe: {trainer: mpo, base: checkpoints/built/s}}",
         "its seed 1 reads 's''s seed-1 build, which 's' does not have"),
        ("{name: s, seeds: [0], recipe: {trainer: sft}}, "
         "{name: e, seeds: [0], recipe: {trainer: average, include: [checkpoints/built/s, mine/adapter]}}",
         "mine/adapter is not a seeded row of this board"),
    ],
)
def test_rows_reading_a_seeded_row_are_checked(tmp_path, rows, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        load_spec(_spec(tmp_path, f"baseline: a\ncheckpoints: [a, {rows}]\ntasks: [geoqa]\n"))
    judge = "judge: {name: j, recipe: {trainer: critic, base: checkpoints/built/s}}\n"
    with pytest.raises(HarnessError, match=re.escape("checkpoint 'j': it reads checkpoints/built/s")):
        load_spec(_spec(tmp_path, f"baseline: a\ncheckpoints: [a, {{name: s, seeds: [0], recipe: {{trainer: sft}}}}]\n"
                                  f"tasks: [geoqa]\n{judge}"))


def test_ci_and_correction_keys(tmp_path):
    spec = load_spec(_spec(tmp_path, "baseline: a\ncheckpoints: [a]\ntasks: [geoqa]\nci: jeffreys\ncorrection: bh\n"))
    assert (spec.ci, spec.correction) == ("jeffreys", "bh")
    with pytest.raises(HarnessError, match="ci 'bca' is not one of"):
        load_spec(_spec(tmp_path, "baseline: a\ncheckpoints: [a]\ntasks: [geoqa]\nci: bca\n"))
    with pytest.raises(HarnessError, match="correction 'bonf' is not one of"):
        load_spec(_spec(tmp_path, "baseline: a\ncheckpoints: [a]\ntasks: [geoqa]\ncorrection: bonf\n"))


def _timed_build(c):
    """A stand-in trainer for the parallel builds test (module level: worker processes import it)."""
    import json
    import time

    log = Path(c.recipe["config"]["log"])
    start = time.time()
    if c.name == "broken":
        raise HarnessError("checkpoint broken: the trainer failed")
    time.sleep(1.0)
    folder = Path(c.recipe.get("out") or c.ckpt)
    for sub in (["iter1", "iter2"] if c.recipe.get("out") else [""]):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    with open(log / f"{c.name}.json", "w") as f:
        json.dump({"start": start, "end": time.time()}, f)


def _parallel_spec(tmp_path, first_member="m1"):
    b, log = tmp_path / "built", tmp_path / "log"
    log.mkdir()
    cfg = f"config: {{log: {log}}}"
    text = (f"baseline: a\ncheckpoints:\n  - a\n"
            f"  - {{name: {first_member}, path: {b}/m1, recipe: {{trainer: sft, base: tiny, {cfg}}}}}\n"
            f"  - {{name: m2, path: {b}/m2, recipe: {{trainer: sft, base: tiny, {cfg}}}}}\n"
            f"  - {{name: avg, path: {b}/avg, recipe: {{trainer: average, base: tiny, include: [{b}/m1, {b}/m2], {cfg}}}}}\n"
            f"  - {{name: dep, path: {b}/dep, recipe: {{trainer: self_critique, base: {b}/avg, {cfg}}}}}\n"
            f"  - {{name: i1, path: {b}/st/iter1, recipe: &st {{trainer: self_train, base: {b}/m1, out: {b}/st, {cfg}}}}}\n"
            f"  - {{name: i2, path: {b}/st/iter2, recipe: *st}}\n"
            "tasks: [geoqa]\n")
    return load_spec(_spec(tmp_path, text)), b, log


def test_parallel_builds_wait_for_what_they_read_and_run_side_by_side(tmp_path, monkeypatch):
    import json

    import harness.report.spec as spec_module
    from harness.report.spec import RECIPE_STAMP, build_checkpoints

    monkeypatch.setattr(spec_module, "recipe_fingerprint", lambda c, data=None: {"recipe": c.recipe})
    spec, b, log = _parallel_spec(tmp_path)
    build_checkpoints(spec, _timed_build, jobs=2)
    t = {p.stem: json.loads(p.read_text()) for p in log.glob("*.json")}
    assert sorted(t) == ["avg", "dep", "i1", "m1", "m2"]  # i2 came with i1's build
    assert t["avg"]["start"] >= max(t["m1"]["end"], t["m2"]["end"]) and t["dep"]["start"] >= t["avg"]["end"]
    assert t["i1"]["start"] >= t["m1"]["end"]
    assert t["m2"]["start"] < t["m1"]["end"] and t["m1"]["start"] < t["m2"]["end"]  # two at once
    assert all((b / p / RECIPE_STAMP).is_file() for p in ("m1", "m2", "avg", "dep", "st/iter1", "st/iter2"))
    build_checkpoints(spec, _timed_build, jobs=2)  # all built and current: nothing runs again
    assert sorted(p.stem for p in log.glob("*.json")) == sorted(t)


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_judge_and_builds_others_wait_for_start_first(tmp_path, monkeypatch, jobs):
    import json

    import harness.report.spec as spec_module
    from harness.report.spec import build_checkpoints

    monkeypatch.setattr(spec_module, "recipe_fingerprint", lambda c, data=None: {"recipe": c.recipe})
    b, log = tmp_path / "built", tmp_path / "log"
    log.mkdir()
    cfg = f"config: {{log: {log}}}"
    text = (f"baseline: a\ncheckpoints:\n  - a\n"
            + "".join(f"  - {{name: {n}, path: {b}/{n}, recipe: {{trainer: sft, base: tiny, {cfg}}}}}\n"
                      for n in ("x1", "x2", "m"))
            + f"  - {{name: dep, path: {b}/dep, recipe: {{trainer: self_train, base: {b}/m, {cfg}}}}}\n"
            f"judge: {{name: j, path: {b}/j, recipe: {{trainer: critic, base: tiny, task: critic, {cfg}}}}}\n"
            "tasks: [geoqa]\n")
    build_checkpoints(load_spec(_spec(tmp_path, text)), _timed_build, jobs=jobs)
    t = {p.stem: json.loads(p.read_text()) for p in log.glob("*.json")}
    order = sorted(t, key=lambda n: t[n]["start"])
    if jobs == 1:  # one at a time: the judge, then the rows in their order
        assert order == ["j", "x1", "x2", "m", "dep"]
    else:  # m (dep waits for it) and the judge first, ahead of x1 and x2 above them in the spec
        assert set(order[:2]) == {"m", "j"} and max(t["m"]["start"], t["j"]["start"]) < min(t["m"]["end"], t["j"]["end"])
        assert t["dep"]["start"] >= t["m"]["end"]


def test_a_failed_parallel_build_stops_what_reads_it_and_raises_its_error(tmp_path, monkeypatch):
    import harness.report.spec as spec_module
    from harness.report.spec import build_checkpoints

    monkeypatch.setattr(spec_module, "recipe_fingerprint", lambda c, data=None: {"recipe": c.recipe})
    spec, b, log = _parallel_spec(tmp_path, first_member="broken")
    with pytest.raises(HarnessError, match="checkpoint broken: the trainer failed"):
        build_checkpoints(spec, _timed_build, jobs=2)
    assert (b / "m2").is_dir()  # the build already running finished
    assert not any((b / p).exists() for p in ("m1", "avg", "dep", "st"))
