"""One run's setup, resolved once: data, items (limit and image check), checkpoints, lazily loaded
backends, the generation cache and the progress bar. eval, score, the judge pass, compare, the
leaderboard and the Python API are thin callers of it.

    with Session(output_dir="runs") as s:
        task = get_task("geoqa")
        items = s.load(task, limit=20)                       # data read, limited, images checked
        backend = s.backend(s.checkpoint("tiny"))            # loads weights only if it must generate
        result = s.evaluate(backend, task, items, EvalSettings())
        result.summary["score"], result.units                # what summary.json holds, what stats resample
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.runner import Backend, EvalResult, EvalSettings, evaluate, run_name
from harness.core.runner import check_images as _check_images
from harness.core.store import GenerationCache
from harness.core.task import Task, resolve_data_dir
from harness.core.types import Item
from harness.core.validate import safe_name
from harness.errors import HarnessError
from harness.models.checkpoints import CheckpointRef, resolve_checkpoint

CACHE_FILE = Path(".cache") / "generations.sqlite"


class LazyBackend:
    """Loads the model only when something must be generated: an unchanged re-run never loads it."""

    def __init__(self, ref: CheckpointRef, **kwargs: Any) -> None:
        self.ref, self.kwargs, self._backend = ref, kwargs, None
        self.name, self.content_hash = ref.name, ref.content_hash

    def _get(self):
        if self._backend is None:
            from harness.models.backend import HFBackend

            self._backend = HFBackend(self.ref, **self.kwargs)
        return self._backend

    def load(self) -> None:
        """Load now: the runner calls this before writing anything when there is work to generate,
        so a broken checkpoint is named while no file of the run exists yet."""
        self._get()

    def check_prompts(self, *args: Any, **kwargs: Any) -> None:
        if self._backend is not None:  # only a loaded model generates, so only then do lengths matter
            self._backend.check_prompts(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any):
        return self._get().generate(*args, **kwargs)

    def choice_losses(self, *args: Any, **kwargs: Any):
        return self._get().choice_losses(*args, **kwargs)

    def generate_common_prefix(self, *args: Any, **kwargs: Any):
        """The loaded model's prefix sharing (HFBackend.generate_common_prefix: self-select's prompts)."""
        return self._get().generate_common_prefix(*args, **kwargs)


@dataclass
class Session:
    """Where runs go and how models load; open it with `with`, which opens the cache and the bar."""

    output_dir: Path | str = "runs"
    data_dir: Path | str | None = None
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    engine: str = "hf"  # hf: transformers generate; vllm: the vLLM engine (GPU)
    show_progress: bool = True
    one_model: bool = False  # keep at most one model loaded (a leaderboard walks many checkpoints)
    served: Any = None  # openai: checkpoints: harness.models.openai_backend.ServedSettings (None: defaults)
    _backends: dict[str, Any] = field(default_factory=dict, repr=False)
    _cache: GenerationCache | None = field(default=None, repr=False)
    _progress: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.data_dir = resolve_data_dir(self.data_dir)  # fail fast, before any model

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # The cache and the bar open on first use, so a bad input found before any work leaves no files.
    @property
    def cache(self) -> GenerationCache:
        if self._cache is None:
            self._cache = GenerationCache(self.output_dir / CACHE_FILE)
        return self._cache

    @property
    def progress(self):
        if self._progress is None:
            from harness.core.progress import progress_bar

            # A rich bar on a terminal, plain timed lines in logs (CI, cluster jobs, `| tee`).
            self._progress = progress_bar(enabled=self.show_progress)
            self._progress.start()
        return self._progress

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        self.release_models()

    # --- inputs ---------------------------------------------------------------------------------
    def load(self, task: Task, limit: int | None = None, split: str = "test", check_images: bool = True) -> list[Item]:
        """The task's items, the first `limit` of them, with every image checked to exist (unless
        no model will see them: `check_images=False`)."""
        items = task.load(self.data_dir, split)[:limit]
        if not items:
            raise HarnessError(f"{task.name}: no items to evaluate in {self.data_dir}")
        if check_images:
            _check_images(task, items)
        return items

    def checkpoint(self, ckpt: str, base: str | None = None, api_base: str | None = None) -> CheckpointRef:
        ref = resolve_checkpoint(ckpt, base=base, trust_remote_code=self.trust_remote_code,
                                 api_base=api_base or getattr(self.served, "api_base", None))
        safe_name(ref.name, "checkpoint name")  # runs/<name>/: checked before the model loads
        return ref

    def backend(self, ref: CheckpointRef, max_images: int = 1) -> Backend:
        """One backend per checkpoint content (the judge may also be a checkpoint under test)."""
        if ref.content_hash not in self._backends:
            if self.one_model:
                self.release_models()  # drop the previous model before the next one loads
            self._backends[ref.content_hash] = self._make_backend(ref, max_images)
        return self._backends[ref.content_hash]

    def _make_backend(self, ref: CheckpointRef, max_images: int) -> Backend:
        if ref.kind == "api":  # a served model (harness/models/openai_backend.py), whatever the engine
            from harness.models.openai_backend import OpenAIBackend, ServedSettings

            return OpenAIBackend(ref, self.served or ServedSettings(), cache=self.cache)
        if self.engine == "vllm":
            from harness.models.vllm_backend import VLLMBackend, require_vllm

            require_vllm()
            return VLLMBackend(ref, dtype=self.dtype, trust_remote_code=self.trust_remote_code, max_images=max_images)
        return LazyBackend(ref, device=self.device, dtype=self.dtype, trust_remote_code=self.trust_remote_code)

    def release_models(self) -> None:
        """Drop every loaded model (before something else, e.g. lmms-eval, loads its own)."""
        self._backends.clear()

    def add_backend(self, backend: Backend) -> Backend:
        """Use an already built backend (an in-memory model) under its content hash."""
        self._backends[backend.content_hash] = backend
        return backend

    # --- running --------------------------------------------------------------------------------
    def run_dir(self, name: str, task: Task, blind: bool = False) -> Path:
        return self.output_dir / name / run_name(task, blind)

    def evaluate(self, backend: Backend, task: Task, items: list[Item], settings: EvalSettings,
                 run_dir: Path | None = None, shard=None) -> EvalResult | None:
        """Run (or resume) one task; samples.jsonl and summary.json land in `run_dir`."""
        run_dir = run_dir or self.run_dir(backend.name, task, settings.blind)
        return evaluate(backend, task, items, settings, run_dir, self.cache, data_dir=self.data_dir,
                        progress=self.progress, shard=shard)
