"""Our tasks as lmms-eval tasks: `harness export-lmms-task geoqa --out DIR`.

Writes DIR/harness_<task>.yaml (lmms-eval's task format) and DIR/harness_<task>_utils.py. The YAML
loads the benchmark file in place from the data dir with `datasets`' local json loader; the utils
module delegates prompt, answer extraction and scoring to this harness's own task class, so the
rules cannot drift between the two tools (lmms-eval users need this package installed). Each
sample reports `accuracy` (our score) and `parsed` (1 when our rule read an answer).

    harness export-lmms-task geoqa --out lmms_tasks/ [--data-dir D] [--extract r3v]
    lmms-eval --model llava_hf --model_args pretrained=... --tasks harness_geoqa \
        --include_path lmms_tasks/ --log_samples --output_path logs/
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from harness.errors import HarnessError
from harness.core.store import atomic_write_text
from harness.core.task import Task, task_classes


def exportable() -> list[str]:
    """Tasks whose test file `datasets` reads as JSON rows carrying our item id (Task.lmms_source).
    MMBench and OCRBench are not: lmms-eval ships its own (mmbench_en_dev, ocrbench)."""
    return sorted(name for name, cls in task_classes().items() if cls.lmms_source)


PREFIX = "harness_"  # lmms-eval's names are global; ours stay apart from any it adds later

_UTILS = '''"""lmms-eval functions for the harness task {task!r}, written by `harness export-lmms-task`.

Prompt, extraction and scoring come from vlm-harness itself (tasks/{task}.py), so lmms-eval and
`harness eval` score an output identically. Data: {data_dir}
"""
from functools import lru_cache
from pathlib import Path

TASK = {task!r}
OPTIONS = {options!r}
DATA_DIR = Path({data_dir!r})
ID_FIELD = {id_field!r}


@lru_cache(maxsize=1)
def _task():
    try:
        from harness.core.task import get_task
    except ImportError as e:
        raise ImportError("this task needs vlm-harness installed (pip install -e <harness repo>)") from e
    return get_task(TASK, **OPTIONS)


@lru_cache(maxsize=1)
def _items():
    return {{item.id: item for item in _task().load(DATA_DIR, "test")}}


def _item(doc):
    return _items()[str(doc[ID_FIELD])]


def process_docs(dataset):
    # Keep the rows our loader keeps (A-OKVQA DA drops difficult questions) and add the category.
    items = _items()
    kept = dataset.filter(lambda doc: str(doc[ID_FIELD]) in items)
    return kept.map(lambda doc: {{"harness_category": items[str(doc[ID_FIELD])].category}})


def doc_to_visual(doc):
    from harness.core.images import open_image

    return [open_image(ref) for ref in _item(doc).images]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return _task().prompt(_item(doc))


def doc_to_target(doc):
    item = _item(doc)
    return item.target if isinstance(item.target, str) else _task().target_text(item)


def process_results(doc, results):
    item = _item(doc)
    extracted = _task().extract(results[0], item)
    return {{"accuracy": float(_task().score(extracted, item)), "parsed": float(extracted is not None)}}
'''


def task_name(task: Task) -> str:
    """lmms-eval name of an exported task: harness_<task>[_<option>_<value>...] (non-defaults)."""
    parts = [PREFIX + task.name]
    parts += [f"{k}_{v}" for k, v in sorted(task.opts.items()) if v != type(task).options[k][0]]
    return re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(parts))


def export_task(task: Task, data_dir: Path, out_dir: Path) -> Path:
    """Write the YAML and its utils module into out_dir; returns the YAML path."""
    if task.lmms_source is None:
        raise HarnessError(
            f"export-lmms-task supports {', '.join(exportable())}, not {task.name!r} "
            "(lmms-eval has its own MMBench and OCRBench tasks)"
        )
    if task.request_type != "generate":
        raise HarnessError(f"{task.name}: only generation modes export (lmms-eval scores choices its own way); drop the option")
    source_file, id_field = task.lmms_source
    data_dir = Path(data_dir).resolve()
    data_file = data_dir / source_file
    items = task.load(data_dir, "test")  # validates the data now, not inside lmms-eval later
    if not items:
        raise HarnessError(f"{task.name}: no items under {data_dir}")
    name = task_name(task)
    utils = _UTILS.format(task=task.name, options=dict(task.opts), data_dir=str(data_dir), id_field=id_field)
    yaml_text = _yaml(name, data_file, task, data_dir)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / f"{name}_utils.py", utils)
    atomic_write_text(out_dir / f"{name}.yaml", yaml_text)
    return out_dir / f"{name}.yaml"


def _yaml(name: str, data_file: Path, task: Task, data_dir: Path) -> str:
    fn = f"!function {name}_utils."
    # JSON strings are valid YAML scalars and keep paths with odd characters intact.
    lines = [
        f"# lmms-eval task for the harness task {task.name} (written by `harness export-lmms-task`).",
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data_file))}",
        "test_split: test",
        "output_type: generate_until",
        f"process_docs: {fn}process_docs",
        f"doc_to_visual: {fn}doc_to_visual",
        f"doc_to_text: {fn}doc_to_text",
        f"doc_to_target: {fn}doc_to_target",
        f"process_results: {fn}process_results",
        "generation_kwargs:",
        f"  max_new_tokens: {task.max_new_tokens}",
        "  temperature: 0",
        "  do_sample: false",
        "  num_beams: 1",
        "metric_list:",
        "  - metric: accuracy",
        "    aggregation: mean",
        "    higher_is_better: true",
        "  - metric: parsed",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 0.0",
        f"  harness_task: {task.name}",
        f"  harness_options: {json.dumps(task.opts)}",
        f"  harness_data_dir: {json.dumps(str(data_dir))}",
    ]
    return "\n".join(lines) + "\n"
