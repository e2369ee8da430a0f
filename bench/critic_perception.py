"""Can a model see what the critic questions ask about? The critic train images asked in A-OKVQA's
direct-answer format (a format the base was pretrained on): the colour and the shape of a single
object, and the colour of the left one of two (README "Critic scoring").

    .venv/bin/python bench/critic_perception.py --ckpt tiny
    .venv/bin/python bench/critic_perception.py --own-answers RUNS/<judge>/critic-agreement-votes_gold/judgements.jsonl

--own-answers reads the replies of an `answer_first=true` judge (from `harness critic agreement` on
the bundled gold votes) and reports, per question, how often the answer it wrote before its verdict
names the reference's colours, and which verdicts it gave.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

SUFFIX = "\nAnswer the question using a single word or phrase."  # A-OKVQA direct answer's instruction


def probes(root: Path) -> list[tuple[str, Path, str, str]]:
    """(question, image, gold word, probe kind) from the references of the critic train questions."""
    out = []
    for q in json.loads((root / "questions_train.json").read_text()):
        words, image = q["reference"].rstrip(".").split(), root / "images" / f"{q['id']}.png"
        if q["question"] == "Describe the object in the image.":  # "A {colour} {shape}."
            out += [(f"What color is the {words[2]}?", image, words[1], "colour of one object"),
                    (f"What shape is the {words[1]} object?", image, words[2], "shape of one object")]
        elif q["question"].startswith("Which shape is on the left"):  # "The {shape} on the left is {colour}."
            out.append((f"What color is the {words[1]}?", image, words[-1], "colour of the left of two"))
    return out


COLOURS = {"red", "green", "blue", "yellow", "purple", "orange"}  # tasks/synth/aokvqa.py COLORS


def own_answers(judgements: Path, questions: Path) -> dict:
    """Per critic question: the judge's own answers (the reply before its first verdict) that name
    exactly the reference's colours, and the verdicts it gave (both orders of every vote)."""
    qs = {str(q["id"]): q for q in json.loads(questions.read_text())}
    colours_right: dict[str, list[bool]] = defaultdict(list)
    verdicts: dict[str, int] = defaultdict(int)
    for line in judgements.read_text().splitlines():
        row = json.loads(line)
        q = qs[row["cluster"]]
        for reply, verdict in ((row["reply"], row["verdict"]), (row["reply_swapped"], row["verdict_swapped"])):
            own = re.split(r"\bAnswer\s*[12]", reply, maxsplit=1)[0]
            said = COLOURS & set(re.findall(r"[a-z]+", own.lower()))
            colours_right[q["question"]].append(said == COLOURS & set(re.findall(r"[a-z]+", q["reference"].lower())))
            verdicts[str(verdict)] += 1
    return {"colours right in its own answer": {k: {"n": len(v), "right": round(100 * sum(v) / len(v), 1)}
                                                for k, v in colours_right.items()},
            "verdicts": dict(verdicts)}


def main(argv=None) -> int:
    from harness.core.types import Prompt
    from harness.judge.pipeline import Judge, JudgeSettings
    from harness.session import Session

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="tiny")
    p.add_argument("--data", default="data", help="data root holding critic/ (its train split)")
    p.add_argument("--out", default="runs/critic-perception")
    p.add_argument("--own-answers", type=Path, help="judgements.jsonl of an answer_first judge on the bundled gold votes")
    args = p.parse_args(argv)
    if args.own_answers:
        print(json.dumps(own_answers(args.own_answers, Path(args.data) / "critic" / "questions.json"), indent=1))
        return 0
    asked = probes(Path(args.data) / "critic")
    with Session(args.out, None) as s:  # a Judge is a cached greedy generator over (text, image) prompts
        model = Judge(s.backend(s.checkpoint(args.ckpt)), s.cache, JudgeSettings(batch_size=32, max_new_tokens=8))
        replies = model.ask([Prompt(q + SUFFIX, (image,)) for q, image, _, _ in asked], "perception")
    right: dict[str, list[bool]] = defaultdict(list)
    for (_, _, gold, kind), reply in zip(asked, replies):
        right[kind].append(gold.lower() in re.findall(r"[a-z]+", reply.lower()))
    result = {kind: {"n": len(xs), "right": round(100 * sum(xs) / len(xs), 1)} for kind, xs in right.items()}
    print(json.dumps({"ckpt": args.ckpt, **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
