"""A researcher's own training data: LLaVA, ShareGPT / LLaMA-Factory, MMPR and TRL dataset files,
read into one row form, validated row by row before any model loads.

    --data data/examples/llava.json                          one source, format detected from its content
    --data data/examples/mmpr/meta.json:2,extra.jsonl:0.5    several, each with a repeat ratio (PATH:RATIO)

A ratio r keeps floor(r) full copies of the source's rows plus a seeded random floor(n * frac(r))
of them (r = 0.5: half the rows, r = 2: every row twice), the rule InternVL applies to MMPR's
`repeat_time` (which multiplies with the ratio). Recipes may give a list of `{path, ratio, format,
image_folder, long_rows}` mappings instead of the string.

Bounds, checked before anything large is built: ratios and repeat_times are finite and > 0, and the
rows they make stay within a budget (MAX_ROWS, $HARNESS_MAX_ROWS); a JSON file above MAX_JSON_BYTES
(read whole) or nested deeper than Python can parse is refused; every unreadable file is one line
naming it. A row longer than the model's context is refused, naming it and its token count, unless
its source says `long_rows: truncate` (`--long-rows truncate`): then its reply is cut to fit.

Layouts (`format`; containers .json / .jsonl / .parquet / a `datasets.save_to_disk` folder):
- llava: `[{id, image, conversations: [{from: human|gpt|system, value}]}]`, images under image_folder
- sharegpt: LLaMA-Factory's `{conversations: [{from, value}] | messages: [{role, content}], system, images}`,
  preference rows with `chosen` / `rejected` turns `{from, value}`
- messages: TRL conversational `{messages: [{role, content}], images}`, content a string or
  `[{type: image}, {type: text, text}]` parts
- preference: TRL preference `{prompt, chosen, rejected, images}` (strings or message lists); MMPR's
  annotation rows `{image, question, chosen, rejected}` read as the same layout
- mmpr: a meta JSON `{name: {root, annotation, repeat_time, ...}}`: every dataset in it

Every row becomes a `Row`: chat messages whose text keeps `<image>` placeholders (one per image,
in the user turns; a row with images and no placeholder gets them at the start of its first user
turn, as LLaVA and TRL do), the image references, and for preference rows the rejected reply.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.core.files import numbered_jsonl, read_json
from harness.errors import HarnessError

FORMATS = ("llava", "sharegpt", "messages", "preference", "mmpr")
PLACEHOLDER = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
         "bot": "assistant", "system": "system"}
SOURCE_KEYS = {"path", "ratio", "format", "image_folder", "long_rows"}
LONG_ROWS = ("refuse", "truncate")
# Rows after repeats, over all sources (each Row is kept in memory; MMPR-v1.2 is ~3M rows).
MAX_ROWS = int(os.environ.get("HARNESS_MAX_ROWS", "5000000"))
MAX_JSON_BYTES = 4 << 30  # a .json file is parsed whole (~10x its size in memory); larger: use .jsonl


@dataclass(frozen=True)
class Source:
    """One data file or folder named by --data / a recipe's `data:`."""

    path: Path
    ratio: float = 1.0
    format: str | None = None  # None: detected from the content
    image_folder: Path | None = None  # None: the file's own folder (MMPR: each dataset's root)
    long_rows: str = "refuse"  # a row longer than the context: "refuse" (an error naming it) or "truncate"


@dataclass
class Row:
    """One validated training row: messages end with an assistant reply (a preference row's chosen)."""

    id: str
    messages: list[dict[str, str]]  # {"role", "content"}, `<image>` placeholders in user turns
    images: list[Any]  # Path, bytes or a PIL image, one per placeholder
    rejected: str | None = None


@dataclass
class Loaded:
    """A source's rows (after repeats) and what the manifest records of it."""

    rows: list[Row]
    record: dict[str, Any] = field(default_factory=dict)


# --- the spec ------------------------------------------------------------------------------------
def parse_spec(spec: Any, image_folder: str | Path | None = None, long_rows: str = "refuse") -> list[Source]:
    """`a.json:2,b.jsonl` (CLI) or a recipe's list of strings / {path, ratio, format, image_folder, long_rows}."""
    if spec is None or spec == "" or spec == []:
        return []
    if long_rows not in LONG_ROWS:
        raise HarnessError(f"--long-rows {long_rows!r}: choose one of {', '.join(LONG_ROWS)}")
    entries = [s for s in spec.split(",")] if isinstance(spec, str) else spec
    if not isinstance(entries, list):
        raise HarnessError(f"data: expected 'PATH[:RATIO],...' or a list of sources, got {type(spec).__name__}")
    out = []
    for entry in entries:
        if isinstance(entry, str):
            path, ratio = _split_ratio(entry.strip())
            out.append(Source(Path(path), ratio, None, Path(image_folder) if image_folder else None, long_rows))
        elif isinstance(entry, dict):
            unknown = set(entry) - SOURCE_KEYS
            if unknown or "path" not in entry:
                raise HarnessError(f"data: a source mapping needs 'path' and may have {', '.join(sorted(SOURCE_KEYS))}; "
                                   f"got {', '.join(sorted(entry))}")
            ratio = entry.get("ratio", 1.0)
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
                raise HarnessError(f"data: {entry['path']}: ratio must be a finite number > 0, got {ratio!r}")
            rows_mode = entry.get("long_rows", long_rows)
            if rows_mode not in LONG_ROWS:
                raise HarnessError(f"data: {entry['path']}: long_rows must be one of {', '.join(LONG_ROWS)}, got {rows_mode!r}")
            fmt = entry.get("format")
            if fmt is not None and fmt not in FORMATS:
                raise HarnessError(f"data: {entry['path']}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
            folder = entry.get("image_folder") or image_folder
            out.append(Source(Path(str(entry["path"])), float(ratio), fmt, Path(folder) if folder else None, rows_mode))
        else:
            raise HarnessError(f"data: each source is a path string or a mapping, got {entry!r}")
    if any(not str(s.path).strip() or str(s.path) == "." for s in out):
        raise HarnessError(f"data: {spec!r} has an empty path; give PATH[:RATIO] separated by commas")
    return out


def _split_ratio(text: str) -> tuple[str, float]:
    path, sep, tail = text.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]*\.?[0-9]+", tail):
        return text, 1.0
    ratio = float(tail)
    if ratio <= 0:
        raise HarnessError(f"data: {text}: the repeat ratio must be > 0 (PATH:2 repeats twice, PATH:0.5 keeps half)")
    return path, ratio


def repeated_count(n: int, ratio: float) -> int:
    """How many rows repeat() makes of `n` (computed before any list is built)."""
    whole = int(ratio)
    return n * whole + int(n * (ratio - whole) + 1e-9)


def repeat(rows: list, ratio: float, rng: random.Random, where: str = "data", budget: int | None = None) -> list:
    """floor(ratio) copies of `rows` plus a random floor(len * frac(ratio)) of them; more than
    `budget` (default MAX_ROWS) rows is an error naming `where`, raised before the list is built."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise HarnessError(f"{where}: the repeat ratio must be a finite number > 0, got {ratio!r}")
    budget = MAX_ROWS if budget is None else budget
    total = repeated_count(len(rows), ratio)
    if total > budget:
        room = f"the budget of {budget:,}" if budget == MAX_ROWS else f"the {budget:,} left of the budget of {MAX_ROWS:,}"
        raise HarnessError(f"{where}: {len(rows):,} rows x {ratio:g} = {total:,} rows, over {room}; "
                           "lower repeat_time / the :RATIO (or raise $HARNESS_MAX_ROWS)")
    whole = int(ratio)
    part = total - len(rows) * whole
    return rows * whole + (rng.sample(rows, part) if part else [])


# --- reading containers ----------------------------------------------------------------------------
def _read_rows(path: Path) -> tuple[list[Any], str]:
    """The rows of a file or save_to_disk folder and how each row is named in errors."""
    if path.is_dir():
        if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            raise HarnessError(f"{path}: a folder must be a datasets.save_to_disk folder (dataset_info.json inside)")
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(path))
            if isinstance(ds, DatasetDict):
                if "train" not in ds:
                    raise HarnessError(f"{path}: a DatasetDict without a 'train' split ({', '.join(ds)}); save the train split")
                ds = ds["train"]
            return list(ds), "row"
        except HarnessError:
            raise
        except Exception as e:  # datasets / pyarrow raise many types for a damaged folder
            raise HarnessError(f"{path}: cannot read the save_to_disk folder ({_first_line(e)}); "
                               "re-save it with Dataset.save_to_disk") from None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist(), "row"
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise HarnessError(f"{path}: cannot read parquet ({_first_line(e)}); rewrite it with pandas or datasets") from None
    if path.suffix == ".jsonl":
        rows: list[Any] = []
        try:
            for n, row in numbered_jsonl(path):
                rows += [None] * (n - 1 - len(rows))  # keeps row numbers = line numbers; blank lines are skipped below
                rows.append(row)
        except RecursionError:
            raise _too_deep(path, len(rows) + 1) from None
        return rows, "line"
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise HarnessError(f"{path}: expected a JSON list of rows (or an MMPR meta mapping), got {type(data).__name__}")
    return data, "row"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _too_deep(path: Path, line: int | None = None) -> HarnessError:
    at = f" (line {line})" if line else ""
    return HarnessError(f"{path}{at}: JSON nested too deeply to read; flatten the rows")


def _read_json(path: Path) -> Any:
    """read_json with the size and depth bounds: one line naming the file instead of a crash."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise HarnessError(f"{path}: {size / 2**30:.1f} GiB is over the {MAX_JSON_BYTES / 2**30:.0f} GiB a .json file "
                           "may have (it is parsed whole); convert it to JSONL (one row per line) or parquet")
    try:
        return read_json(path)
    except RecursionError:
        raise _too_deep(path) from None


def detect(path: Path) -> str:
    """The layout of a source, from its content."""
    if path.suffix == ".json" and path.is_file():
        data = _read_json(path)
        if isinstance(data, dict) and data and all(isinstance(v, dict) and "annotation" in v for v in data.values()):
            return "mmpr"
    if path.suffix == ".jsonl":  # the first row is enough (MMPR annotation files run to gigabytes)
        from harness.core.files import not_utf8

        try:
            with path.open(encoding="utf-8") as f:
                line = next((ln for ln in f if ln.strip()), "null")
            first = json.loads(line)
        except UnicodeDecodeError as e:
            raise not_utf8(path, e) from None
        except RecursionError:
            raise _too_deep(path) from None
        except json.JSONDecodeError as e:
            raise HarnessError(f"{path}: its first row is not valid JSON ({e.msg}); one JSON object per line") from None
    else:
        rows, _ = _read_rows(path)
        first = next((r for r in rows if r is not None), None)
    if not isinstance(first, dict):
        raise HarnessError(f"{path}: no rows, or rows that are not objects; give rows like {{messages, images}}")
    return detect_row(first, path)


def detect_row(row: dict, path: Path) -> str:
    if "chosen" in row and "rejected" in row and ("prompt" in row or "question" in row):
        return "preference"
    if "conversations" in row:
        return "sharegpt" if "images" in row or "chosen" in row else "llava"
    if "messages" in row:
        turns = row["messages"]
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
            return "sharegpt"
        return "messages"
    raise HarnessError(f"{path}: cannot tell the format from keys {', '.join(sorted(row))}; expected conversations "
                       f"(LLaVA/ShareGPT), messages (TRL), prompt/chosen/rejected (preference) or an MMPR meta file; "
                       f"or set format: {' | '.join(FORMATS)} in the recipe")


# --- rows -> Row ----------------------------------------------------------------------------------
class RowError(Exception):
    """A problem with one row; `load_source` adds the file and row number."""


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # TRL content parts
        out = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") not in ("text", "image"):
                raise RowError(f"{what} parts must be {{type: text, text}} or {{type: image}}, got {part!r}"[:200])
            if part["type"] == "image":
                out.append(PLACEHOLDER)
            else:
                if not isinstance(part.get("text"), str):
                    raise RowError(f"{what} text part needs a string 'text'")
                out.append(part["text"])
        return "".join(out)
    raise RowError(f"{what} must be a string, got {type(value).__name__}")


def _turns(value: Any, key: str, role_key: str, text_key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(f"'{key}' must be a non-empty list of {{{role_key}, {text_key}}}, got {type(value).__name__}")
    out = []
    for n, turn in enumerate(value):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise RowError(f"'{key}'[{n}] must be {{{role_key}, {text_key}}}, got {str(turn)[:80]}")
        role = ROLES.get(str(turn[role_key]).lower())
        if role is None:
            raise RowError(f"'{key}'[{n}] has {role_key}={turn[role_key]!r}; use one of {', '.join(ROLES)}")
        out.append({"role": role, "content": _text(turn[text_key], f"'{key}'[{n}].{text_key}")})
    return out


def _as_turns(value: Any, key: str, default_role: str) -> list[dict[str, str]]:
    """A preference field: a string, one {from, value} / {role, content} turn, or a list of turns."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        role_key, text_key = ("from", "value") if "from" in value[0] else ("role", "content")
        return _turns(value, key, role_key, text_key)
    raise RowError(f"'{key}' must be a string or a list of turns, got {type(value).__name__}")


def _need(row: dict, *keys: str) -> Any:
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    raise RowError(f"missing key '{keys[0]}'" + (f" (or '{keys[1]}')" if len(keys) > 1 else ""))


def _image_list(row: dict, *keys: str) -> list[Any]:
    for key in keys:
        if key in row and row[key] is not None:
            value = row[key]
            if isinstance(value, (str, dict, bytes)) or hasattr(value, "size"):
                return [value]
            if isinstance(value, list):
                return value
            raise RowError(f"'{key}' must be an image path or a list of them, got {type(value).__name__}")
    return []


def to_row(raw: Any, fmt: str) -> tuple[list[dict[str, str]], list[Any], str | None]:
    """(messages, image refs as given, rejected) of one raw row in layout `fmt`."""
    if not isinstance(raw, dict):
        raise RowError(f"a row must be a JSON object, got {type(raw).__name__}")
    rejected = None
    if fmt == "llava":
        messages = _turns(_need(raw, "conversations"), "conversations", "from", "value")
        images = _image_list(raw, "image", "images")
    elif fmt == "sharegpt":
        if "messages" in raw:
            turns = raw["messages"]
            keys = ("from", "value") if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0] else ("role", "content")
            messages = _turns(turns, "messages", *keys)
        else:
            messages = _turns(_need(raw, "conversations", "messages"), "conversations", "from", "value")
        if isinstance(raw.get("system"), str) and raw["system"].strip() and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": raw["system"]})
        images = _image_list(raw, "images", "image")
        if "chosen" in raw or "rejected" in raw:
            messages.append({"role": "assistant", "content": _reply(raw, "chosen")})
            rejected = _reply(raw, "rejected")
    elif fmt == "messages":
        messages = _turns(_need(raw, "messages"), "messages", "role", "content")
        images = _image_list(raw, "images", "image")
    elif fmt == "preference":
        messages = _as_turns(_need(raw, "prompt", "question"), "prompt", "user")
        messages.append({"role": "assistant", "content": _reply(raw, "chosen")})
        rejected = _reply(raw, "rejected")
        images = _image_list(raw, "images", "image")
    else:
        raise RowError(f"format {fmt!r} has no row layout")
    if messages[-1]["role"] != "assistant":
        raise RowError("the conversation must end with an assistant reply (there is nothing to learn after a user turn)")
    if not messages[-1]["content"].strip():
        raise RowError("the last assistant reply is empty; give it text")
    first = next((m for m in messages if m["role"] != "system"), None)
    if first is None or first["role"] != "user":
        raise RowError("the conversation must start with a user turn (after an optional system turn)")
    return messages, images, rejected


def _reply(raw: dict, key: str) -> str:
    if key not in raw or raw[key] is None:
        raise RowError(f"missing key '{key}'; a preference row needs prompt, chosen and rejected")
    turns = _as_turns(raw[key], key, "assistant")
    text = turns[-1]["content"] if turns[-1]["role"] == "assistant" else ""
    if not text.strip():
        raise RowError(f"'{key}' is empty; give the {key} reply text (or drop the row)")
    return text


def place_images(messages: list[dict[str, str]], n_images: int) -> None:
    """Check that user turns hold one `<image>` per image (none: all go to the first user turn)."""
    for m in messages:
        if m["role"] == "assistant" and PLACEHOLDER in m["content"]:
            raise RowError(f"an assistant turn contains {PLACEHOLDER}; images belong in user turns")
    count = sum(m["content"].count(PLACEHOLDER) for m in messages)
    if count == 0 and n_images:
        first = next(m for m in messages if m["role"] == "user")
        first["content"] = (PLACEHOLDER + "\n") * n_images + first["content"]
    elif count != n_images:
        raise RowError(f"{count} {PLACEHOLDER} placeholder(s) but {n_images} image(s); "
                       f"put one {PLACEHOLDER} in the user turns per image")


def resolve_image(ref: Any, folder: Path) -> Any:
    """A path (resolved under `folder`), raw bytes, or a PIL image; a missing file is a RowError."""
    if isinstance(ref, dict):  # datasets' Image feature stored as {bytes, path}
        if ref.get("bytes"):
            return bytes(ref["bytes"])
        ref = ref.get("path")
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref)
    if hasattr(ref, "size") and hasattr(ref, "convert"):  # a PIL image (datasets decoded it)
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise RowError(f"an image must be a path string, got {ref!r}"[:120])
    path = Path(ref) if Path(ref).is_absolute() else folder / ref
    if not path.is_file():
        raise RowError(f"image {ref} not found in {folder}; fix the path or set the source's image_folder")
    return path


# --- sources --------------------------------------------------------------------------------------
def file_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def source_hash(src: Source) -> str:
    """Content hash of a source's files (an MMPR meta file and its annotations); images are not
    hashed (millions of them in MMPR), their names are, inside the annotation files."""
    if not src.path.exists():
        raise HarnessError(f"data: {src.path} not found; give a JSON/JSONL/parquet file or a save_to_disk folder")
    if (src.format or detect(src.path)) != "mmpr":
        return file_hash([src.path])
    meta = _read_json(src.path)
    entries = meta.values() if isinstance(meta, dict) else []
    anns = [_near(src.path.parent, e["annotation"]) for e in entries if isinstance(e, dict) and isinstance(e.get("annotation"), str)]
    return file_hash([src.path] + [a for a in anns if a.is_file()])


def _rows_of(path: Path, fmt: str, folder: Path, name: str, limit: int | None) -> Iterator[Row]:
    raws, unit = _read_rows(path)
    kept = 0
    for n, raw in enumerate(raws, 1 if unit == "line" else 0):
        if raw is None:
            continue
        if limit and kept >= limit:
            return
        rid = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), (str, int)) else n
        try:
            messages, refs, rejected = to_row(raw, fmt)
            place_images(messages, len(refs))
            images = [resolve_image(r, folder) for r in refs]
        except RowError as e:
            raise HarnessError(f"{path} {unit} {n}: {e}") from None
        kept += 1
        yield Row(f"{name}:{rid}", messages, images, rejected)


def load_source(src: Source, limit: int | None = None, seed: int = 0) -> Loaded:
    """Read, validate and repeat one source; its manifest record names path, format, hash, rows, ratio."""
    if not src.path.exists():
        raise HarnessError(f"data: {src.path} not found; give a JSON/JSONL/parquet file or a save_to_disk folder")
    fmt = src.format or detect(src.path)
    rng = random.Random(seed)
    record: dict[str, Any] = {"path": str(src.path), "format": fmt, "ratio": src.ratio}
    if src.long_rows != "refuse":
        record["long_rows"] = src.long_rows
    if fmt == "mmpr":
        rows, record["datasets"] = _load_mmpr(src, limit, rng)
        record["hash"] = source_hash(src)
        record["rows_read"] = sum(d["rows_read"] for d in record["datasets"])
    else:
        folder = src.image_folder or src.path.parent
        if not folder.is_dir():
            raise HarnessError(f"data: {src.path}: image folder {folder} not found; fix image_folder")
        read = list(_rows_of(src.path, fmt, folder, src.path.stem, limit))
        if not read:
            raise HarnessError(f"data: {src.path} has no rows")
        record["hash"] = source_hash(src)
        record["rows_read"] = len(read)
        rows = repeat(read, src.ratio, rng, f"data: {src.path}")
    record["rows"] = len(rows)
    record["kind"] = "preference" if all(r.rejected is not None for r in rows) else (
        "conversation" if all(r.rejected is None for r in rows) else "mixed")
    record["images"] = sum(len(r.images) for r in rows)
    return Loaded(rows, record)


def _load_mmpr(src: Source, limit: int | None, rng: random.Random) -> tuple[list[Row], list[dict]]:
    meta = _read_json(src.path)
    if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
        raise HarnessError(f"{src.path}: an MMPR meta file maps dataset names to {{root, annotation, repeat_time}}")
    base = src.path.parent
    rows: list[Row] = []
    datasets = []
    for name, entry in meta.items():
        where = f"{src.path} dataset {name!r}"
        for key in ("root", "annotation"):
            if not isinstance(entry.get(key), str):
                raise HarnessError(f"{where}: '{key}' must be a path string; MMPR entries need root and annotation")
        rt = entry.get("repeat_time", 1)
        if isinstance(rt, bool) or not isinstance(rt, (int, float)) or not math.isfinite(rt) or rt <= 0:
            raise HarnessError(f"{where}: repeat_time must be a finite number > 0, got {rt!r}")
        ann, root = _near(base, entry["annotation"]), _near(base, entry["root"])
        if not ann.is_file():
            raise HarnessError(f"{where}: annotation {entry['annotation']} not found (looked in {base} and .); fix the path")
        if not root.is_dir():
            raise HarnessError(f"{where}: root {entry['root']} is not a folder (looked in {base} and .); fix the path")
        fmt = src.format if src.format not in (None, "mmpr") else detect(ann)
        read = list(_rows_of(ann, fmt, src.image_folder or root, name, limit))
        kept = repeat(read, float(rt) * src.ratio, rng, where, MAX_ROWS - len(rows))
        datasets.append({"name": name, "annotation": str(ann), "repeat_time": rt, "rows_read": len(read),
                         "rows": len(kept)})
        rows += kept
    if not rows:
        raise HarnessError(f"data: {src.path}: the MMPR meta file lists no rows")
    return rows, datasets


def _near(base: Path, name: str) -> Path:
    """MMPR paths: relative to the meta file's folder when they exist there, else to the working dir."""
    p = Path(name)
    return p if p.is_absolute() or not (base / p).exists() else base / p


def load_sources(sources: list[Source], limit: int | None = None, seed: int = 0) -> tuple[list[Loaded], str]:
    """Every source, validated; plus the one-line summary of what was loaded."""
    loaded = [load_source(s, limit, seed) for s in sources]
    total = sum(len(ld.rows) for ld in loaded)
    if total > MAX_ROWS:
        raise HarnessError(f"data: {', '.join(str(s.path) for s in sources)} make {total:,} rows together, over the "
                           f"budget of {MAX_ROWS:,}; lower their ratios (or raise $HARNESS_MAX_ROWS)")
    parts = []
    for ld in loaded:
        r = ld.record
        extra = f" x{r['ratio']:g}" if r["ratio"] != 1 else ""
        if r["format"] == "mmpr":
            extra += " (" + ", ".join(f"{d['name']} {d['rows_read']}x{d['repeat_time']:g}" for d in r["datasets"]) + ")"
        parts.append(f"{r['path']} [{r['format']}, {r['kind']}] {r['rows_read']} rows{extra} -> {r['rows']}")
    images = {id(i) if not isinstance(i, Path) else str(i) for ld in loaded for row in ld.rows for i in row.images}
    total = sum(len(ld.rows) for ld in loaded)
    summary = f"data: {'; '.join(parts)}; {total} rows, {len(images)} distinct images found"
    return loaded, summary


def strip_placeholders(text: str) -> str:
    """A turn's text without its `<image>` placeholders (and the newline that follows each)."""
    return re.sub(re.escape(PLACEHOLDER) + r"\n?", "", text).strip()
