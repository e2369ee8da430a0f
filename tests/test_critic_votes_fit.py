"""Reference votes on long answers against a small judge's context: `--answer-words` cuts each
answer (counted) and leaves out the votes still past the context (counted), on the real MLLM-Bench
votes; without it a long prompt is one clear error."""
from __future__ import annotations

import json

import pytest

from conftest import real_or_skip, run_cli
from harness.core.store import GenerationCache
from harness.errors import ContextOverflow
from harness.judge.pipeline import Judge, agreement, shorten_answers, within_context
from harness.models.mock import MockBackend
from tasks.critic import read_votes

VOTES = ("critic", "mllm_bench", "pairwise_votes_gpt4v_subset.json")


@pytest.fixture
def comparisons():
    return read_votes(real_or_skip(*VOTES))


def test_answers_are_cut_to_their_first_words_and_counted(comparisons):
    words = 30
    long = sum(len(a.split()) > words for c in comparisons for a in (c.answer1, c.answer2))
    assert 0 < long < 2 * len(comparisons)  # the real file has both kinds, so the count is informative
    cut, n = shorten_answers(comparisons, words)
    assert n == long and len(cut) == len(comparisons)
    for before, after in zip(comparisons, cut):
        assert (after.id, after.reference, after.question, after.images) == (
            before.id, before.reference, before.question, before.images)
        for full, short in ((before.answer1, after.answer1), (before.answer2, after.answer2)):
            if len(full.split()) <= words:
                assert short == full
            else:
                assert short.endswith(" ...") and short[:-4].split() == full.split()[:words]


class ShortContextJudge(MockBackend):
    """A scripted judge whose context refuses prompts over `limit` characters, as HFBackend does."""

    def __init__(self, limit: int) -> None:
        super().__init__(lambda req: "Answer1", name="short", content_hash="short-1")
        self.limit = limit

    def check_prompts(self, prompts, max_new_tokens):
        for item_id, prompt in prompts:
            if len(prompt.text) > self.limit:
                raise ContextOverflow(f"item {item_id}: prompt exceeds the model's context")


def test_votes_past_the_context_are_left_out_and_counted(comparisons, tmp_path):
    judge = Judge(ShortContextJudge(limit=1500), GenerationCache(tmp_path / "c.sqlite"))
    kept, past = within_context(judge, comparisons)
    from harness.judge.pipeline import pairwise_prompt
    fits = [c for c in comparisons if max(len(pairwise_prompt(c.question, c.answer1, c.answer2)),
                                         len(pairwise_prompt(c.question, c.answer2, c.answer1))) <= 1500]
    assert kept == fits and past == len(comparisons) - len(fits) and 0 < past < len(comparisons)
    s = agreement(judge, kept, tmp_path / "out", {"votes_past_context": past})
    assert s["votes"] == len(fits) and s["votes_past_context"] == past


def test_cli_cuts_answers_and_reports_the_counts(random_tiny, tmp_path):
    votes = real_or_skip(*VOTES)
    res = run_cli("critic", "agreement", "--judge", str(random_tiny), "--votes", str(votes), "--limit", "6",
                  "--answer-words", "12", "--output-dir", str(tmp_path), "--out", str(tmp_path / "agree"))
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "agree" / "judged.json").read_text())
    expected_cut = sum(len(a.split()) > 12 for c in read_votes(votes)[:6] for a in (c.answer1, c.answer2))
    assert s["answer_words"] == 12 and s["answers_cut"] == expected_cut
    assert s["votes"] + s["votes_past_context"] == 6
    assert "answers cut to 12 words" in res.stdout


def test_cli_without_answer_words_names_the_flag_when_a_prompt_is_past_the_context(random_tiny, tmp_path):
    """The one-line error for long references: it names the vote file and --answer-words, exits 2 and
    writes no agreement files."""
    votes = real_or_skip(*VOTES)
    res = run_cli("critic", "agreement", "--judge", str(random_tiny), "--votes", str(votes), "--output-dir",
                  str(tmp_path), "--out", str(tmp_path / "agree"))
    assert res.returncode == 2, res.stdout + res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "--answer-words N" in line and "context" in line and votes.name in line
    assert not (tmp_path / "agree" / "judged.json").exists()
