"""Score a model on benchmarks while it trains: a transformers TrainerCallback (TRL trainers too).

    from harness import EvalCallback
    trainer = SFTTrainer(..., callbacks=[EvalCallback(tasks=["geoqa"], every=200, limit=100)])

Every `every` optimizer steps (and at the end of training) the model, as it is in memory, is
evaluated with `harness.evaluate` on the test split of each task; score and 95% CI go into
`trainer.state.log_history` (saved in every checkpoint's trainer_state.json) and the callback's
`history` as `harness/<task>/score`, `.../ci_low`, `.../ci_high`, and the runs are kept under
<output_dir>/<name>-step<N>/<task>/ like any `harness eval` run. Only the main process evaluates.
Never pass a task's train data here: these are test splits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback


class EvalCallback(TrainerCallback):
    def __init__(self, tasks: Sequence[str] = ("geoqa",), every: int = 500, output_dir: str | Path = "runs",
                 name: str = "train", processor: str | Path | None = None, at_end: bool = True, **settings: Any):
        from harness.api import settings_from

        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        settings_from(**settings)  # a bad setting fails now, not after the first `every` steps
        self.tasks, self.every, self.output_dir, self.name = list(tasks), every, output_dir, name
        self.processor, self.at_end, self.settings = processor, at_end, settings
        self.history: list[dict[str, Any]] = []  # one entry per evaluation: step and the flat scores
        self._last_step = -1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._score(state, model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.at_end:
            self._score(state, model)
        return control

    def _score(self, state, model) -> None:
        if model is None or state.global_step == self._last_step or not state.is_world_process_zero:
            return
        from harness.api import evaluate

        self._last_step = state.global_step
        results = evaluate(model, self.tasks, output_dir=self.output_dir, processor=self.processor,
                           name=f"{self.name}-step{state.global_step}", **self.settings)
        logs: dict[str, Any] = {}
        for task, result in results.items():
            for key in ("score", "ci_low", "ci_high"):
                logs[f"harness/{task}/{key}"] = result.summary[key]
        self.history.append({"step": state.global_step, **logs})
        state.log_history.append({**logs, "step": state.global_step})
