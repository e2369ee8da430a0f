"""Right and wrong replies of a task item, each checked with the task's own rule: the material of
pretraining's selection and judging formats and of the preference treatments' replay pairs."""
from __future__ import annotations

import random
from typing import Any


def task_replies(task_name: str, task: Any, item: Any, target: str) -> tuple[list[str], list[str]]:
    """Right and wrong replies of one item, each checked with the task's own rule."""
    right, wrong = [target], []
    if task_name == "geoqa":
        from tasks.geoqa import _COT

        x = item.metadata["x"]
        from tasks.synth.geoqa import answer_value

        for kind, template in _COT.items():
            v = answer_value(kind, x)
            text = template.format(x=x, v=v) + f" Answer: {v}°"
            (right if kind == item.metadata["type"] else wrong).append(text)
        right.append(f"Answer: {item.metadata['answer_value']}°")
    elif task_name in ("aokvqa_mc", "mmbench"):
        wrong += [c for c in item.choices if c != target]
    elif task_name == "aokvqa_da":
        wrong += [c for c in item.choices if c not in item.target]
    elif task_name == "ocrbench":
        from tasks.synth.ocrbench import WORDS

        wrong += [w for w in random.Random(item.id).sample(WORDS, 4) if w.lower() not in target.lower()]
    checked_right = [r for r in dict.fromkeys(right) if task.score(task.extract(r, item), item) >= 1.0]
    checked_wrong = [w for w in dict.fromkeys(wrong) if task.score(task.extract(w, item), item) <= 0.0]
    return checked_right, checked_wrong
