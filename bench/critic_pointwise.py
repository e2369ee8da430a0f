"""Can a judge tell right from wrong answers? Each answer of a votes file scored pointwise, the mean
score per answer quality (the gold votes name it: right / partly right / wrong / malformed), and
the pairwise agreement derived by comparing the two scores (README "Critic scoring").

    .venv/bin/python bench/critic_pointwise.py --judge checkpoints/built/critic
    .venv/bin/python bench/critic_pointwise.py --judge X --train-pairs 240   # the critic's own train pairs

--train-pairs N writes the first N pairwise judgements of the critic train split as a votes file
(in --out) and scores those instead: agreement on what the judge was trained on.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def train_votes(data: Path, out: Path, n: int) -> Path:
    """The critic train split's first n pairwise judgements in the gold votes' layout (images linked)."""
    root = data / "critic"
    questions = {q["id"]: q for q in json.loads((root / "questions_train.json").read_text())}
    rows = [json.loads(line) for line in (root / "judgements_train.jsonl").read_text().splitlines() if line.strip()]
    pairs = [r for r in rows if r["kind"] == "pairwise"][:n]
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "images").exists():
        (out / "images").symlink_to((root / "images").resolve())
    votes = [{"unique_idx": f"{r['id']}_{k % 2}", "image": f"images/{r['id']}.png", "question": questions[r["id"]]["question"],
              "model_1": r["qualities"][0], "model_2": r["qualities"][1], "raw_answer1": r["answer1"],
              "raw_answer2": r["answer2"], "answer": r["verdict"]} for k, r in enumerate(pairs)]
    path = out / "votes_train.json"
    path.write_text(json.dumps(votes))
    return path


def main(argv=None) -> int:
    from harness.core.types import Prompt
    from harness.judge.pipeline import Judge, JudgeSettings, parse_score, pointwise_prompt
    from harness.session import Session
    from tasks.critic import read_votes

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--judge", action="append", required=True, help="judge checkpoint; repeatable")
    p.add_argument("--votes", default="data/critic/votes_gold.json")
    p.add_argument("--train-pairs", type=int, default=0)
    p.add_argument("--out", default="runs/critic-pointwise")
    args = p.parse_args(argv)
    votes = train_votes(Path("data"), Path(args.out), args.train_pairs) if args.train_pairs else Path(args.votes)
    raw = json.loads(votes.read_text())
    comparisons = read_votes(votes)
    results = {}
    with Session(args.out, None) as s:
        for name in args.judge:
            judge = Judge(s.backend(s.checkpoint(name)), s.cache, JudgeSettings(batch_size=32))
            prompts = [Prompt(pointwise_prompt(c.question, a), c.images) for c in comparisons for a in (c.answer1, c.answer2)]
            scores = [parse_score(r) for r in judge.ask(prompts, "pointwise")]
            by_quality, agree = defaultdict(list), []
            for n, (c, row) in enumerate(zip(comparisons, raw)):
                a, b = scores[2 * n], scores[2 * n + 1]
                by_quality[row["model_1"]].append(a)
                by_quality[row["model_2"]].append(b)
                verdict = None if a is None or b is None else "1" if a > b else "2" if b > a else "tie"
                agree.append(float(verdict == c.reference))
            results[name] = {
                "pairwise_from_pointwise": round(100 * sum(agree) / len(agree), 1),
                "mean_score": {q: round(sum(v for v in vs if v is not None) / max(1, sum(v is not None for v in vs)), 1)
                               for q, vs in sorted(by_quality.items())},
            }
            print(name, json.dumps(results[name]))
            s.release_models()
    Path(args.out, "critic_pointwise.json").write_text(json.dumps({"votes": str(votes), "judges": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
