"""The sample viewer: pages per run, flips that match the statistics, escaping, CSV formulas, CLI."""
from __future__ import annotations

import csv
import html.parser
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from viewer_runs import HOSTILE, coin_run, hostile_geoqa, write_run

from harness.report import viewer
from harness.stats import ci as stats
from harness.stats.board import leaderboard_frame
from harness.core.files import csv_safe


def page_json(path: Path) -> dict:
    """The data block of a viewer page, parsed as the page's own script parses it."""
    text = path.read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    return json.loads(text[start: text.index("</script>", start)])


class Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(path: Path) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for task in ("geoqa", "mmbench"):
        coin_run(root / "base" / task, task, 0.45, seed=1, label="base")
        coin_run(root / "sft" / task, task, 0.6, seed=2, label="sft")
    return root


@pytest.mark.parametrize("task", ["geoqa", "mmbench"])
def test_flip_counts_are_the_discordant_counts_of_the_statistics(runs, task):
    a, b = viewer.load_run(runs / "sft" / task), viewer.load_run(runs / "base" / task)
    ua, ub = a.unit_scores(), b.unit_scores()
    paired = stats.paired_difference(list(ua.values()), list(ub.values()), list(ua), list(ub), B=200)
    pair = viewer.flips(ua, ub)
    assert paired.a_only is not None and paired.a_only + paired.b_only > 10  # a real test: many flips
    assert (pair.wrong_to_right, pair.right_to_wrong, pair.n) == (paired.a_only, paired.b_only, paired.n)
    # The flips page lists every item of exactly the flipped units, and says the same counts.
    data = viewer.page_data(a, b)
    assert data["flips"]["wr"] == paired.a_only and data["flips"]["rw"] == paired.b_only
    unit_of = a.unit_of()
    assert {unit_of[r["id"]] for r in data["rows"]} == set(pair.kinds)
    assert len(data["rows"]) == sum(1 for i in a.items if unit_of[i] in pair.kinds)
    for row in data["rows"]:  # both sides' outputs, as stored
        assert row["b"] and row["s"] and row["f"] == ("wr" if row["u"] == 1.0 else "rw")


def test_leaderboard_flips_use_the_units_every_checkpoint_shares(tmp_path, runs):
    base, sft = viewer.load_run(runs / "base" / "geoqa"), viewer.load_run(runs / "sft" / "geoqa")
    short = tmp_path / "short" / "geoqa"
    coin_run(short, "geoqa", 0.5, seed=3, label="short", limit=200)  # lacks 100 units
    partial = viewer.load_run(short)
    unit_scores = {r.label: {"geoqa": r.unit_scores()} for r in (base, sft, partial)}
    frame = leaderboard_frame(unit_scores, "base", B=200)
    links = viewer.leaderboard_pages(tmp_path / "lb", {(r.label, "geoqa"): r for r in (base, sft, partial)}, "base", unit_scores)
    assert set(links) == {("base", "geoqa"), ("sft", "geoqa"), ("short", "geoqa")}
    assert "delta" not in links[("base", "geoqa")]
    data = page_json(tmp_path / "lb" / links[("sft", "geoqa")]["delta"])
    common = sorted(set.intersection(*(set(c["geoqa"]) for c in unit_scores.values())))
    assert len(common) == 200 == int(frame.loc[frame.checkpoint == "sft", "n"].iloc[0])
    a = [unit_scores["sft"]["geoqa"][u] for u in common]
    b = [unit_scores["base"]["geoqa"][u] for u in common]
    paired = stats.paired_difference(a, b, common, common, B=200)
    assert (data["flips"]["wr"], data["flips"]["rw"]) == (paired.a_only, paired.b_only)
    row = frame[frame.checkpoint == "sft"].iloc[0]  # the leaderboard's own discordant counts
    assert (data["flips"]["wr"], data["flips"]["rw"]) == (int(row["a_only"]), int(row["b_only"]))
    assert all(int(r["id"]) < 200 for r in data["rows"])
    # A seeds row (one score mapping per seed) narrows the shared units like the statistics do.
    seeded = {"base": unit_scores["base"], "sft": unit_scores["sft"],
              "seeds": {"geoqa": [sft.unit_scores(), partial.unit_scores()]}}  # the short run is one seed
    links = viewer.leaderboard_pages(tmp_path / "lb2", {(r.label, "geoqa"): r for r in (base, sft)}, "base", seeded)
    assert page_json(tmp_path / "lb2" / links[("sft", "geoqa")]["delta"])["flips"] == data["flips"]


def test_a_page_lists_every_item_with_its_k_samples(tmp_path):
    run = coin_run(tmp_path / "k3" / "geoqa", "geoqa", 0.5, seed=4, k=3, limit=40)
    data = viewer.page_data(viewer.load_run(run))
    assert len(data["rows"]) == 40
    rows = [json.loads(line) for line in (run / "samples.jsonl").open()]
    first = data["rows"][0]
    assert [s[0] for s in first["s"]] == [r["output"] for r in rows if r["id"] == first["id"]]
    assert first["t"] in "ABCD" and len(first["ch"]) >= 2 and first["c"] and first["p"].startswith(first["q"][:0])
    assert all(len(r["img"]) == 1 for r in data["rows"])
    assert all(t.startswith("data:image/webp;base64,") for t in data["thumbs"])
    assert sum(s[1] is None for r in data["rows"] for s in r["s"]) == sum(r["extracted"] is None for r in rows)


def test_hostile_text_is_shown_never_run(tmp_path):
    data_dir = hostile_geoqa(tmp_path / "data")
    label = '"><img src=x onerror=alert(1)>'
    run = write_run(tmp_path / "runs" / "x" / "geoqa", "geoqa",
                    lambda item, s: HOSTILE[int(item.id) % len(HOSTILE)] + " Answer: A", label=label, data_dir=data_dir)
    (page,) = viewer.write_view([run], tmp_path / "view")
    text = page.read_text(encoding="utf-8")
    # No data byte can end the JSON block or open a tag: the only tags are the template's own.
    for needle in ("<script>document", "<img src=x", "</textarea>", "<b>bold", "\x00"):
        assert needle not in text
    tags = tags_of(page)
    assert [t for t, _ in tags if t == "script"] == ["script", "script"]
    assert not any(t in ("img", "textarea", "b") for t, _ in tags)
    assert not any(k.startswith("on") for _, attrs in tags for k in attrs)
    # ...and every string comes back exactly, NUL and direction overrides included.
    data = page_json(page)
    assert data["checkpoint"] == label
    outputs = {s[0] for r in data["rows"] for s in r["s"]}
    assert outputs == {h + " Answer: A" for h in HOSTILE}
    assert {r["c"] for r in data["rows"]} == set(HOSTILE)
    assert all(any(" ".join(h.split()) in r["q"] for h in HOSTILE) for r in data["rows"])  # the loader folds whitespace
    # The policy admits one script, by hash, and no network.
    csp = next(a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["script-src"].startswith("'sha256-")
    assert "unsafe" not in directives["script-src"]


def test_file_names_from_untrusted_names_stay_in_the_folder():
    for name in ("../../etc/passwd", "a/b", ".hidden", "ok-name_1.0+blind", "=cmd|' /C calc'!A0", ""):
        safe = viewer.file_stem(name)
        assert "/" not in safe and not safe.startswith(".") and safe
    assert viewer.file_stem("ok-name_1.0+blind") == "ok-name_1.0+blind"
    assert viewer.file_stem("a/b") != viewer.file_stem("a_b")


@pytest.mark.parametrize("cell, safe", [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"), ("+1+1", "'+1+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("-3.5", "-3.5"), ("+2", "+2"), ("1e-3", "1e-3"), ("tiny", "tiny"), (3, 3),
])
def test_csv_safe(cell, safe):
    assert csv_safe(cell) == safe


def test_leaderboard_csv_neutralises_formulas(tmp_path):
    from harness.report import render as report

    evil = "=cmd|' /C calc'!A0"
    frame = leaderboard_frame({"base": {"geoqa": {"1": 1.0, "2": 0.0}}, evil: {"geoqa": {"1": 0.0, "2": 0.0}}}, "base", B=100)
    report.write_csv(frame, tmp_path / "leaderboard.csv")
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert [r["checkpoint"] for r in rows] == ["base", "'" + evil]
    assert float(rows[1]["delta"]) == -50.0  # numbers, negative ones included, stay numbers


def test_view_and_diff_commands(runs, tmp_path):
    done = run_cli("view", str(runs / "sft"), "--vs", str(runs / "base"), "--out", str(tmp_path / "v"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [
        "sft--geoqa--vs-base.html", "sft--geoqa.html", "sft--mmbench--vs-base.html", "sft--mmbench.html"]
    a, b = viewer.load_run(runs / "sft" / "geoqa"), viewer.load_run(runs / "base" / "geoqa")
    pair = viewer.flips(a.unit_scores(), b.unit_scores())
    done = run_cli("diff", str(runs / "sft"), str(runs / "base"), "--task", "geoqa", "--first", "5", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert f"wrong→right {pair.wrong_to_right}, right→wrong {pair.right_to_wrong}" in done.stdout
    first = [i for i in a.items if i in pair.kinds][:5]
    assert all(f"│ {i} " in done.stdout for i in first)


def test_category_differences_find_the_one_category_that_moved(tmp_path):
    """Known truth: the treatment gains 35 points on `vertical` items only. Each category's row is
    the paired difference of that category's units alone, Holm runs over the categories, the whole
    task's row is the leaderboard's delta, and `harness diff` prints them."""
    from harness.stats.categories import ALL, category_differences

    coin_run(tmp_path / "base" / "geoqa", "geoqa", 0.4, seed=3, label="base")
    coin_run(tmp_path / "de" / "geoqa", "geoqa", lambda item: 0.9 if item.category == "vertical" else 0.4,
             seed=4, label="de")
    a, b = viewer.load_run(tmp_path / "de" / "geoqa"), viewer.load_run(tmp_path / "base" / "geoqa")
    rows = {r.category: r for r in category_differences([a.units()], [b.units()], B=200)}
    assert set(rows) == {u.category for u in a.units()} | {ALL} and len(rows) == 5
    for name, row in rows.items():
        ua = {u.id: u.score for u in a.units() if name == ALL or u.category == name}
        ub = {u.id: u.score for u in b.units() if u.id in ua}
        alone = stats.paired_difference(list(ua.values()), list(ub.values()), list(ua), list(ub), B=200)
        assert (row.delta, row.low, row.high, row.n) == (alone.delta, alone.low, alone.high, alone.n)
    vertical = rows["vertical"]
    assert vertical.low > 0 and vertical.low < 35 * 0.95 < vertical.high  # the truth, 35 x (1 - 5% unparsed)
    others = [r for name, r in rows.items() if name not in ("vertical", ALL)]
    assert all(r.low < 0 < r.high for r in others)
    assert rows["vertical"].p_adjusted == pytest.approx(min(1.0, vertical.p_value * 4))  # Holm: smallest p x 4
    frame = leaderboard_frame({"base": {"geoqa": b.unit_scores()}, "de": {"geoqa": a.unit_scores()}}, "base", B=200)
    board = frame[frame["checkpoint"] == "de"].iloc[0]
    assert (board["delta"], board["delta_ci_low"], board["delta_ci_high"]) == pytest.approx(
        (rows[ALL].delta, rows[ALL].low, rows[ALL].high))
    done = run_cli("diff", str(tmp_path / "de"), str(tmp_path / "base"), "--task", "geoqa", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "│ vertical" in x)
    assert f"{vertical.delta:+.1f} [{vertical.low:+.1f}, {vertical.high:+.1f}]" in line


def test_a_seeded_build_is_compared_over_its_seeds_as_the_seeds_board_does(tmp_path):
    """A folder of seed<k>/ runs is one treatment's seeds: each category gets the seed-aware
    interval, and the whole task's row is exactly the seeds board's delta for that row."""
    from harness.stats.categories import ALL, category_differences
    from harness.stats.seeds import seeded_delta

    coin_run(tmp_path / "base" / "geoqa", "geoqa", 0.4, seed=3, label="base")
    for k, lift in enumerate((0.3, 0.5, 0.1)):  # seeds that differ a lot on vertical
        coin_run(tmp_path / "de" / f"seed{k}" / "geoqa", "geoqa",
                 lambda item, lift=lift: 0.4 + lift if item.category == "vertical" else 0.4, seed=10 + k, label=f"seed{k}")
    seeds = [viewer.load_run(tmp_path / "de" / f"seed{k}" / "geoqa") for k in range(3)]
    base = viewer.load_run(tmp_path / "base" / "geoqa")
    rows = {r.category: r for r in category_differences([r.units() for r in seeds], [base.units()])}
    assert {r.method for r in rows.values()} == {"seeds"}
    ids = sorted(u.id for u in base.units() if u.category == "vertical")
    xa = np.array([[run.unit_scores()[i] for i in ids] for run in seeds])
    xb = np.array([[base.unit_scores()[i] for i in ids]])
    delta, low, high, p = seeded_delta(xa, xb, 0.95)
    assert (rows["vertical"].delta, rows["vertical"].low, rows["vertical"].high) == pytest.approx(
        (100 * delta, 100 * low, 100 * high))
    frame = leaderboard_frame({"base": {"geoqa": base.unit_scores()},
                               "de": {"geoqa": [run.unit_scores() for run in seeds]}}, "base", B=200)
    board = frame[frame["checkpoint"] == "de"].iloc[0]
    assert (board["delta"], board["delta_ci_low"], board["delta_ci_high"]) == pytest.approx(
        (rows[ALL].delta, rows[ALL].low, rows[ALL].high))
    done = run_cli("diff", str(tmp_path / "de"), str(tmp_path / "base"), "--task", "geoqa", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "de (3 seeds)" in done.stdout and "give one seed's folder" in done.stdout
    line = next(x for x in done.stdout.splitlines() if "│ vertical" in x)
    assert f"{rows['vertical'].delta:+.1f} [{rows['vertical'].low:+.1f}, {rows['vertical'].high:+.1f}]" in line
    # a seeded build with one seed is that run: its flips are listed
    for k in (1, 2):
        shutil.rmtree(tmp_path / "de" / f"seed{k}")
    done = run_cli("diff", str(tmp_path / "de"), str(tmp_path / "base"), "--task", "geoqa", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "de (seed0)" in done.stdout and "wrong→right" in done.stdout and "mcnemar" in done.stdout


def test_category_differences_keep_circular_groups_whole(runs):
    """MMBench: a unit is a circular group, so a category's n counts groups, not rotations."""
    from harness.stats.categories import ALL, category_differences

    a, b = viewer.load_run(runs / "sft" / "mmbench"), viewer.load_run(runs / "base" / "mmbench")
    rows = category_differences([a.units()], [b.units()], B=200)
    assert sum(r.n for r in rows if r.category != ALL) == rows[-1].n == len(a.units())
    assert len(a.units()) < len(a.items)


@pytest.mark.parametrize("args, message", [
    (["view", "{tmp}/nothing", "--out", "{tmp}/o"], "no runs in"),
    (["view", "{runs}/sft/geoqa", "--vs", "{runs}/base/mmbench", "--out", "{tmp}/o"], "compare runs of the same task"),
    (["diff", "{runs}/sft", "{runs}/base", "--task", "ocrbench"], "has no ocrbench run"),
])
def test_bad_inputs_are_one_line_errors(runs, tmp_path, args, message):
    done = run_cli(*[a.format(tmp=tmp_path, runs=runs) for a in args])
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_page_size_per_item_stays_small(runs):
    """~1.2 kB per GeoQA item (thumbnail included): 5,000 items stay well under 10 MB."""
    data = viewer.page_data(viewer.load_run(runs / "sft" / "geoqa"))
    from harness.report import viewer_page

    size = len(viewer_page.render(data).encode())
    assert size / len(data["rows"]) < 2000, size


def test_vlmevalkit_export_neutralises_formulas(tmp_path):
    from test_bridges import _scored_run, _seed_tsv

    tsv = _seed_tsv(tmp_path / "data" / "SEED_Mini.tsv")
    run = _scored_run(tmp_path, ["--task", "lmudata_mc", "--tsv", str(tsv)],
                      {"10": '=HYPERLINK("http://x","red")', "11": "-2", "12": "@square"})
    done = run_cli("export", "--format", "vlmeval", "--run", str(run), "--out", str(tmp_path / "m_SEED_Mini.tsv"))
    assert done.returncode == 0, done.stderr
    with (tmp_path / "m_SEED_Mini.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["prediction"] for r in rows] == ['\'=HYPERLINK("http://x","red")', "-2", "'@square"]
