"""harness: an evaluation-first benchmark harness for vision-language models.

    import harness
    results = harness.evaluate("tiny", tasks=["geoqa"], limit=20)    # or an in-memory model
    trainer = SFTTrainer(..., callbacks=[harness.EvalCallback(tasks=["geoqa"], every=200)])
"""
from harness.core.runner import EvalResult, EvalSettings
from harness.core.task import Task, Unit, get_task, task_names
from harness.core.types import GenConfig, Item, Prompt
from harness.errors import HarnessError

__all__ = ["EvalCallback", "EvalResult", "EvalSettings", "GenConfig", "HarnessError", "Item", "Prompt", "Session",
           "Task", "Unit", "evaluate", "get_task", "task_names"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Loaded on first use: the callback imports transformers, and `harness --help` must stay fast.
    if name == "evaluate":
        from harness.api import evaluate

        return evaluate
    if name == "EvalCallback":
        from harness.callback import EvalCallback

        return EvalCallback
    if name == "Session":
        from harness.session import Session

        return Session
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
