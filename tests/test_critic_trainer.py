"""The critic treatment (trainers/critic.py): a judge trained on the critic train split's judgements,
in the harness judge's own prompts, with verdicts in both orders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import HarnessError

DATA = Path(__file__).resolve().parents[1] / "data"


def test_judgements_become_judge_prompts_with_gold_replies():
    from harness.judge.pipeline import parse_score, parse_verdict, pairwise_prompt
    from trainers.critic import CriticConfig, judge_examples

    rows = [json.loads(x) for x in (DATA / "critic" / "judgements_train.jsonl").read_text().splitlines()]
    examples, data = judge_examples(DATA, CriticConfig())
    pairwise = [r for r in rows if r["kind"] == "pairwise"]
    assert data["examples"] == {"pairwise": 2 * len(pairwise), "pointwise": len(rows) - len(pairwise)}
    test_ids = {q["id"] for q in json.loads((DATA / "critic" / "questions.json").read_text())}
    assert not test_ids & {int(e.item.id) for e in examples}  # the test questions are never read
    by_text = {(e.item.id, e.text): e.target for e in examples}  # two questions may share text and answers
    for r in pairwise[:50]:
        question = next(e.item.question for e in examples if e.item.id == str(r["id"]))
        gold = "1" if r["verdict"] == "Answer1" else "2"
        assert parse_verdict(by_text[str(r["id"]), pairwise_prompt(question, r["answer1"], r["answer2"])]) == gold
        swapped = by_text[str(r["id"]), pairwise_prompt(question, r["answer2"], r["answer1"])]
        assert parse_verdict(swapped) == {"1": "2", "2": "1"}[gold]
    points = [e for e in examples if e.text.startswith("You are a fair judge") and "\nAnswer: " in e.text]
    assert points and all(parse_score(e.target) in (0, 10, 50, 90) for e in points)
    only_pairs, _ = judge_examples(DATA, CriticConfig(kinds="pairwise", swap=False))
    assert len(only_pairs) == len(pairwise)


def test_decision_only_and_answer_first_replies_keep_the_parsed_verdict():
    from harness.core.task import get_task
    from harness.judge.pipeline import parse_score, parse_verdict
    from trainers.critic import CriticConfig, judge_examples

    full, _ = judge_examples(DATA, CriticConfig())
    bare, _ = judge_examples(DATA, CriticConfig(reasons=False))
    lead, _ = judge_examples(DATA, CriticConfig(reasons=False, answer_first=True))
    assert [e.text for e in bare] == [e.text for e in full] == [e.text for e in lead]
    for f, b, a in zip(full, bare, lead):
        if "Answer1: " in f.text:  # pairwise: the bare reply is the verdict alone, the same one
            assert b.target in ("Answer1.", "Answer2.") and parse_verdict(b.target) == parse_verdict(f.target)
            assert a.target == f"{get_task('critic').target_text(f.item)} {b.target}"
            assert parse_verdict(a.target) == parse_verdict(f.target)  # the own answer names no verdict
        else:  # pointwise: the score alone, answer_first leaves it as it is
            assert b.target == a.target == f"{parse_score(f.target)}."


def test_answers_add_each_train_question_with_its_reference():
    from harness.core.task import get_task
    from trainers.critic import CriticConfig, judge_examples

    task = get_task("critic")
    train = {q["id"]: q for q in json.loads((DATA / "critic" / "questions_train.json").read_text())}
    judged, _ = judge_examples(DATA, CriticConfig())
    both, data = judge_examples(DATA, CriticConfig(answers=True))
    answers = both[len(judged):]
    assert data["examples"]["answers"] == len(answers) == len(train)
    for e in answers:
        assert e.text == task.prompt(e.item) and e.target == train[int(e.item.id)]["reference"]
        assert not e.text.startswith("You are a fair judge")


def test_critic_trains_a_loadable_judge_and_refuses_other_tasks(random_tiny, tmp_path):
    from trainers.critic import CriticConfig, run

    manifest = run(CriticConfig(max_steps=2, batch_size=2, lora_r=2), str(random_tiny), "critic", tmp_path / "judge",
                   data_dir=DATA, progress=False)
    assert manifest["treatment"] == "critic" and manifest["metrics"]["steps"] == 2
    assert (tmp_path / "judge" / "adapter_model.safetensors").is_file()
    with pytest.raises(HarnessError, match="pass --task critic"):
        run(CriticConfig(max_steps=1), str(random_tiny), "geoqa", tmp_path / "x", data_dir=DATA, progress=False)
    with pytest.raises(HarnessError, match="kinds must name"):
        CriticConfig(kinds="listwise")
    assert not (tmp_path / "x").exists()
