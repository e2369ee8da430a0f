"""How often a geoqa run's written arithmetic is wrong: each "a° - b° = c°" (or +) step in its replies
is checked, and the last "= c°" is compared with the "Answer: d°" that follows. Separates "the model
cannot compute inside its own template" from "it picks the wrong rule" (README, the MPO rows).

    .venv/bin/python bench/template_arithmetic.py runs/causes/runs/sft runs/causes/runs/mpo_gold ...
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

STEP = re.compile(r"(\d+)°\s*([-+])\s*(\d+)°\s*=\s*(\d+)°")
RESULT = re.compile(r"=\s*(\d+)°")
ANSWER = re.compile(r"Answer:\s*(\d+)°")


def check(samples: Path) -> dict[str, int]:
    steps = wrong = with_both = mismatched = 0
    for line in samples.read_text().splitlines():
        reply = json.loads(line)["output"]
        for a, op, b, c in STEP.findall(reply):
            steps += 1
            wrong += (int(a) - int(b) if op == "-" else int(a) + int(b)) != int(c)
        results, answers = RESULT.findall(reply), ANSWER.findall(reply)
        if results and answers:
            with_both += 1
            mismatched += results[-1] != answers[-1]
    return {"steps": steps, "wrong_steps": wrong, "replies_with_result_and_answer": with_both,
            "answer_differs_from_result": mismatched}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: template_arithmetic.py RUN_DIR [RUN_DIR ...]  (each holding geoqa/samples.jsonl)")
    for run in map(Path, sys.argv[1:]):
        samples = run / "geoqa" / "samples.jsonl"
        if not samples.is_file():
            sys.exit(f"{samples}: not found; evaluate the checkpoint on geoqa first (harness eval --tasks geoqa)")
        c = check(samples)
        print(f"{run.name}: {c['wrong_steps']} of {c['steps']} arithmetic steps wrong "
              f"({c['wrong_steps'] / max(1, c['steps']):.0%}); final result != answer in "
              f"{c['answer_differs_from_result']} of {c['replies_with_result_and_answer']} replies")
