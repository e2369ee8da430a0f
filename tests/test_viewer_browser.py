"""The leaderboard and the sample viewer as a person sees them: headless Chromium (tests/browser.py).

Skipped, with the reason, where no browser is installed (`.ci/run` installs Debian's chromium).
Set VIEWER_SHOTS=DIR to keep the screenshots.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from urllib.parse import unquote

import pytest
from browser import Chromium, find_browser
from conftest import small_board_spec
from viewer_runs import coin_run

from harness.report import viewer

pytestmark = pytest.mark.skipif(find_browser() is None, reason="no Chromium/Chrome on PATH: the browser tests need one "
                                "(apt-get install chromium; .ci/run installs it)")


def count_text(page: Chromium) -> str:
    return page.evaluate("document.getElementById('count').textContent")


def assert_not_blank(png: bytes, name: str) -> None:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    assert img.size[0] >= 800 and colours is not None and len(colours) > 20, f"{name}: blank screenshot"
    shots = os.environ.get("VIEWER_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        (Path(shots) / name).write_bytes(png)


def expected_count(run_dir: Path, *, wrong: bool = False, unparsed: bool = False) -> int:
    by_item: dict[str, list[dict]] = {}
    for line in (run_dir / "samples.jsonl").open():
        row = json.loads(line)
        by_item.setdefault(row["id"], []).append(row)
    return sum(1 for rows in by_item.values()
               if (not wrong or sum(r["score"] for r in rows) / len(rows) < 1)
               and (not unparsed or any(r["extracted"] is None for r in rows)))


def test_leaderboard_links_to_viewer_pages(tmp_path, random_tiny):
    from harness.report.leaderboard import load_spec, run_leaderboard

    run_leaderboard(load_spec(small_board_spec(tmp_path, random_tiny, limit=12, bootstrap=500,
                                                generation="{batch_size: 8, max_new_tokens: 8}")))
    board = tmp_path / "small" / "leaderboard.html"
    with Chromium.launch(tmp_path / "profile") as page:
        page.open(board)
        rows = page.evaluate("[...document.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent)")
        assert rows == ["base (baseline)", "same", "base+blind"]
        plot = page.evaluate("(() => { const i = document.querySelector('img'); return [i.complete, i.naturalWidth]; })()")
        assert plot[0] and plot[1] > 300
        hrefs = page.evaluate("[...document.querySelectorAll('td a')].map(a => a.getAttribute('href'))")
        assert len(hrefs) == 6 + 4  # a score link per cell, a delta link per non-baseline cell
        assert all((board.parent / unquote(h)).is_file() for h in hrefs)
        assert_not_blank(page.screenshot(), "leaderboard.png")
        # Follow the first score link with a real click: base x geoqa.
        page.click("tbody tr:first-child td:nth-child(2) a")
        page.wait_event("Page.loadEventFired")
        assert page.evaluate("document.title") == "base · geoqa"
        run = tmp_path / "runs" / "base" / "geoqa"
        assert page.evaluate("document.querySelectorAll('#rows tr').length") == 12
        assert count_text(page) == "showing 1-12 of 12 matching (12 in all)"
        page.click("#unparsed")
        n = expected_count(run, unparsed=True)
        assert count_text(page) == (f"showing 1-{n} of {n} matching (12 in all)" if n else "no item matches (12 in all)")
        assert page.evaluate("document.querySelectorAll('#rows tr').length") == n
        assert page.errors() == []


def test_flips_page_shows_hostile_outputs_as_text(tmp_path):
    for label, p, seed in (("base", 0.4, 1), ("sft", 0.65, 2)):
        coin_run(tmp_path / label / "geoqa", "geoqa", p, seed=seed, label=label, hostile=True, k=1 if label == "base" else 3)
    pages = viewer.write_view([tmp_path / "sft" / "geoqa"], tmp_path / "view", vs=[tmp_path / "base" / "geoqa"])
    runs = {label: viewer.load_run(tmp_path / label / "geoqa") for label in ("sft", "base")}
    pair = viewer.flips(runs["sft"].unit_scores(), runs["base"].unit_scores())
    with Chromium.launch(tmp_path / "profile") as page:
        page.open(pages[0])
        assert page.evaluate("document.title") == "sft · geoqa"  # no output's script renamed the page
        assert count_text(page) == "showing 1-100 of 300 matching (300 in all)"
        assert page.evaluate("document.querySelectorAll('#rows tr').length") == 100
        assert page.evaluate("document.querySelectorAll('#rows .out').length") == 300  # K = 3 side by side
        assert page.evaluate("document.querySelectorAll('#rows img').length") == 100  # thumbnails only
        assert page.evaluate("document.body.textContent.includes('<script>document.title')")
        assert page.evaluate("document.body.textContent.includes('\u27e6U+202E\u27e7')")  # overrides shown, not obeyed
        page.click("#wrong")
        n = expected_count(tmp_path / "sft" / "geoqa", wrong=True)
        assert count_text(page) == f"showing 1-100 of {n} matching (300 in all)"
        # Text search, typed as a person types it.
        page.click("#search")
        page.call("Input.insertText", text="pwned")
        page.evaluate("new Promise(r => setTimeout(r, 400))")
        assert "matching" in count_text(page) and page.evaluate("document.querySelectorAll('#rows tr').length") > 0
        assert_not_blank(page.screenshot(), "viewer-run.png")

        page.open(pages[1])
        flips = pair.wrong_to_right + pair.right_to_wrong + pair.count("up") + pair.count("down")
        assert page.evaluate("document.title") == "sft vs base · geoqa: flipped units"
        assert count_text(page) == f"showing 1-{min(100, flips)} of {flips} matching ({flips} in all)"
        options = page.evaluate("[...document.querySelectorAll('#flip option')].map(o => o.textContent)")
        assert options[1:] == [f"{name} ({pair.count(k)})" for k, name in
                               (("wr", "wrong → right"), ("rw", "right → wrong"), ("up", "better"), ("down", "worse"))
                               if pair.count(k)]
        assert_not_blank(page.screenshot(), "viewer-flips.png")
        assert page.errors() == []


@pytest.mark.slow
def test_five_thousand_items_open_and_filter_fast(tmp_path):
    """The closing note's numbers: page size, first paint, load (rows drawn), a filter click."""
    import time

    from viewer_runs import chain_of_thought_run, large_geoqa

    data = large_geoqa(tmp_path / "data", 5000)
    run = chain_of_thought_run(tmp_path / "runs" / "sft" / "geoqa", data, 0.6, seed=2, label="sft")
    (page_path,) = viewer.write_view([run], tmp_path / "view")
    size = page_path.stat().st_size
    with Chromium.launch(tmp_path / "profile") as page:
        times = page.open(page_path)
        start = time.perf_counter()
        page.click("#wrong")
        text = count_text(page)
        click = time.perf_counter() - start
        # The redraw itself, timed inside the page (the click above includes the protocol's round trips).
        redraw = page.evaluate("(() => { const t = performance.now(); document.getElementById('wrong').click();"
                               " return performance.now() - t; })()")
        assert page.errors() == []
    print(f"\n5,000 items: {size / 1e6:.2f} MB, first contentful paint {times['firstContentfulPaint']:.2f} s, "
          f"load (rows drawn) {times['load']:.2f} s, filter click {click * 1000:.0f} ms ({text}), in-page redraw {redraw:.0f} ms")
    assert size < 10e6 and times["load"] < 5 and click < 1 and redraw < 500
