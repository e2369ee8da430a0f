"""A run's predictions in VLMEvalKit's result layout: `harness export --format vlmeval`.

    harness export --format vlmeval --run runs/tiny/mmbench --out outputs/tiny/tiny_MMBench_DEV_EN.tsv

VLMEvalKit writes one file per model and dataset, `<work_dir>/<model>_<dataset>.xlsx` (or `.tsv`
with PRED_FORMAT=tsv): the dataset TSV's columns without `image`, plus `prediction` (the raw model
output), one row per `index`; its evaluation then re-extracts answers from `prediction`. This
writes the same for a run of an LMUData TSV task (mmbench, lmudata_mc): `.tsv` (tab-separated,
every field quoted, as VLMEvalKit dumps it) or `.xlsx` (needs openpyxl). MMBench circular copies
that the harness built (the file lacked them) become rows with their rotated options and answer.
For samples drawn more than once the first (sample 0) is written.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from harness.core.files import atomic_path, csv_safe, read_tsv
from harness.errors import HarnessError
from harness.core.task import task_classes


def tsv_tasks() -> list[str]:
    """Tasks that read an LMUData TSV (Task.lmu_tsv): their runs export in VLMEvalKit's layout."""
    return [name for name, cls in task_classes().items() if cls.lmu_tsv]


def _read_rows(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    if not path.is_file():
        raise HarnessError(f"source TSV not found: {path}; pass --data-dir pointing at the data the run used")
    header, rows = read_tsv(path)
    return header, {str(int(float(r["index"]))): r for r in rows}


def prediction_rows(run_dir: Path, data_dir: str | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of the VLMEvalKit result table for a run folder (read by read_run: its
    scores checked; the task's own loader gives each row's options, and MMBench's built copies,
    exactly as scored; the task names its TSV, Task.lmu_file)."""
    import sys

    from harness.core.record import RECORD_FILE, load_record
    from harness.core.rundir import read_run, run_data_dir

    if not (run_dir / RECORD_FILE).is_file():
        raise HarnessError(f"{run_dir} is not a run folder (no summary.json); pass e.g. --run runs/tiny/mmbench")
    task_name = load_record(run_dir / RECORD_FILE).task
    if task_name not in tsv_tasks():
        raise HarnessError(
            f"--format vlmeval exports runs of LMUData TSV tasks ({', '.join(tsv_tasks())}), not {task_name!r}"
        )
    run = read_run(run_dir, data_dir=data_dir, need_record=True)
    for note in run.notes():
        print(f"warning: {note}", file=sys.stderr)
    outputs = {r["id"]: r["output"] for r in run.records if r["sample"] == 0}
    if not outputs:
        raise HarnessError(f"{run_dir}/samples.jsonl holds no sample 0 outputs")
    tsv = run.task.lmu_file(run_data_dir(run.record, data_dir))
    header, rows = _read_rows(tsv)
    columns = [c for c in header if c != "image"] + ["prediction"]
    out = []
    for item_id in [i for i in rows if i in outputs] + [i for i in outputs if i not in rows]:
        item = run.items[item_id]
        row = dict(rows.get(item_id) or rows[item.group])  # a built circular copy starts from its base row
        row.update(zip(item.metadata["letters"], item.choices))
        row.update(index=item_id, answer=str(item.target), prediction=outputs[item_id])
        out.append({c: row.get(c, "") for c in columns})
    return columns, out


def export_predictions(run_dir: Path, out: Path, data_dir: str | None = None) -> Path:
    if out.suffix not in (".tsv", ".xlsx"):
        raise HarnessError(f"--out {out}: name a .tsv or .xlsx file (VLMEvalKit reads <model>_<dataset>.xlsx or .tsv)")
    columns, rows = prediction_rows(run_dir, data_dir)
    # Spreadsheet formulas in questions or outputs (`=cmd|...`) must not run when a person opens the
    # file; .xlsx included (openpyxl stores a string starting with "=" as a formula).
    rows = [{k: csv_safe(v) for k, v in row.items()} for row in rows]
    with atomic_path(out) as tmp:
        if out.suffix == ".xlsx":
            _write_xlsx(tmp, columns, rows)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t", quoting=csv.QUOTE_ALL)
                writer.writeheader()
                writer.writerows(rows)
    return out


def _write_xlsx(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    try:
        import openpyxl  # noqa: F401  (pandas' Excel writer)
    except ImportError:
        raise HarnessError("writing .xlsx needs openpyxl (pip install openpyxl); or write .tsv and run VLMEvalKit with PRED_FORMAT=tsv") from None
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    frame["index"] = frame["index"].astype(int)  # VLMEvalKit matches rows by integer index
    frame.to_excel(path, index=False, engine="openpyxl")
