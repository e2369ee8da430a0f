"""harness: an evaluation-first benchmark harness for vision-language models."""
from harness.errors import HarnessError
from harness.core.task import Task, Unit, get_task, task_names
from harness.core.types import GenConfig, Item, Prompt

__all__ = ["GenConfig", "HarnessError", "Item", "Prompt", "Task", "Unit", "get_task", "task_names"]
__version__ = "0.1.0"
