"""Name a checkpoint on the command line, get a checked reference to it.

`--checkpoint` accepts `tiny` (the shipped embedded model), a local Hugging Face checkpoint folder
(has config.json) or a PEFT adapter folder (has adapter_config.json; its base comes from the
adapter's `base_model_name_or_path` or from `--base`). Nothing here loads weights.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError

TINY_NAME = "tiny"
# Files above this size are hashed by their head, tail and size only (documented in content_hash).
LARGE_FILE_BYTES = 64 * 2**20
EDGE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class CheckpointRef:
    name: str  # the id used in runs/<name>
    path: Path
    kind: Literal["model", "adapter"]
    content_hash: str
    base_path: Path | None = None  # the base model folder, for adapters
    model_type: str = ""  # config.json's model_type (the base's, for adapters)


def tiny_path() -> Path:
    import harness

    return Path(harness.__file__).resolve().parents[1] / "checkpoints" / TINY_NAME


def resolve_checkpoint(ckpt: str, base: str | None = None, trust_remote_code: bool = False) -> CheckpointRef:
    if ckpt == TINY_NAME:
        path = tiny_path()
        if not (path / "config.json").is_file():
            raise HarnessError(f"the embedded tiny checkpoint is missing at {path}; run `make tiny` to build it")
        return _model_ref(path, TINY_NAME, trust_remote_code)
    path = Path(ckpt).expanduser()
    if not path.is_dir():
        raise HarnessError(
            f"checkpoint not found: {path}; pass `tiny` or a folder holding config.json or adapter_config.json"
        )
    path = path.resolve()
    if (path / "adapter_config.json").is_file():
        return _adapter_ref(path, base, trust_remote_code)
    if (path / "config.json").is_file():
        return _model_ref(path, path.name, trust_remote_code)
    raise HarnessError(
        f"{path} is not a checkpoint (no config.json or adapter_config.json); "
        "point --checkpoint at the folder written by save_pretrained"
    )


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HarnessError(f"broken {path}: {e}; re-save or re-download the checkpoint") from None
    if not isinstance(config, dict):
        raise HarnessError(f"broken {path}: expected a JSON object; re-save or re-download the checkpoint")
    return config


def _model_ref(path: Path, name: str, trust_remote_code: bool) -> CheckpointRef:
    config = _read_config(path / "config.json")
    model_type = str(config.get("model_type", ""))
    # InternVL (and any model shipping its own modelling code) runs Python from the checkpoint.
    if (model_type == "internvl_chat" or "auto_map" in config) and not trust_remote_code:
        raise HarnessError(
            f"{path} ({model_type or 'custom model'}) runs code shipped with the checkpoint; "
            "pass --trust-remote-code if you trust it"
        )
    return CheckpointRef(name=name, path=path, kind="model", content_hash=content_hash(path), model_type=model_type)


def _adapter_ref(path: Path, base: str | None, trust_remote_code: bool) -> CheckpointRef:
    adapter_config = _read_config(path / "adapter_config.json")
    base_name = base or adapter_config.get("base_model_name_or_path")
    if not base_name:
        raise HarnessError(f"adapter {path} does not name its base model; pass --base PATH")
    base_path = tiny_path() if base_name == TINY_NAME else Path(str(base_name)).expanduser()
    if not base_path.is_absolute() and not base_path.is_dir():
        base_path = path / base_path  # a base named relative to the adapter folder
    if not (base_path / "config.json").is_file():
        raise HarnessError(
            f"base model {base_name!r} of adapter {path} not found; pass --base PATH to a local checkpoint folder"
        )
    base_ref = _model_ref(base_path.resolve(), base_path.name, trust_remote_code)
    digest = hashlib.sha256(f"{content_hash(path)}+{base_ref.content_hash}".encode()).hexdigest()[:16]
    return CheckpointRef(
        name=path.name, path=path, kind="adapter", content_hash=digest,
        base_path=base_ref.path, model_type=base_ref.model_type,
    )


def content_hash(folder: Path) -> str:
    """sha256 over the sorted relative names, sizes and contents of the folder's files.

    Hidden files (".cache", ...) are skipped. A file over 64 MB contributes its first and last
    16 MB and its size instead of its whole content: checkpoints of real models are many GB, and a
    changed weight file almost surely changes its size, head or tail (safetensors puts its header
    at the head).
    """
    h = hashlib.sha256()
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(folder).as_posix()}\0{size}\0".encode())
        with p.open("rb") as f:
            if size <= LARGE_FILE_BYTES:
                for block in iter(lambda: f.read(2**20), b""):
                    h.update(block)
            else:
                h.update(f.read(EDGE_BYTES))
                f.seek(size - EDGE_BYTES)
                h.update(f.read(EDGE_BYTES))
    return h.hexdigest()[:16]
