"""Name a checkpoint on the command line, get a checked reference to it.

`--checkpoint` accepts `tiny` (the shipped embedded model), a local Hugging Face checkpoint folder
(has config.json) or a PEFT adapter folder (has adapter_config.json; its base comes from the
adapter's `base_model_name_or_path` or from `--base`), or `openai:MODEL`, a model behind an
OpenAI-compatible server at `--api-base` (harness/models/openai_backend.py). Nothing here loads
weights. `save_for_engines` writes a checkpoint folder that vLLM and `transformers serve` load as is.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError
from harness.models.openai_backend import PREFIX as API_PREFIX

TINY_NAME = "tiny"
# Files above this size are hashed by their head, tail and size only (documented in content_hash).
LARGE_FILE_BYTES = 64 * 2**20
EDGE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class CheckpointRef:
    name: str  # the id used in runs/<name>
    path: Path
    kind: Literal["model", "adapter", "api"]
    content_hash: str
    base_path: Path | None = None  # the base model folder, for adapters
    model_type: str = ""  # config.json's model_type (the base's, for adapters)
    api_base: str | None = None  # kind "api": the server's base URL (no credentials) ...
    api_model: str = ""  # ... and the model name it serves


def open_adapter(model, path, **kwargs):
    """`PeftModel.from_pretrained(model, path, **kwargs)`, without the FutureWarning PEFT 0.21 triggers by
    reading transformers' deprecated `is_gradient_checkpointing` (nothing a user can act on)."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return PeftModel.from_pretrained(model, str(path), **kwargs)


def tiny_path() -> Path:
    import harness

    return Path(harness.__file__).resolve().parents[1] / "checkpoints" / TINY_NAME


def resolve_checkpoint(ckpt: str, base: str | None = None, trust_remote_code: bool = False,
                       api_base: str | None = None) -> CheckpointRef:
    if ckpt.startswith(API_PREFIX):
        return _api_ref(ckpt[len(API_PREFIX):], api_base)
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


def _api_ref(model: str, api_base: str | None) -> CheckpointRef:
    import os

    from harness.models.openai_backend import BASE_ENV, api_identity, clean_base_url  # light: no client imported

    if not model.strip():
        raise HarnessError(f"{API_PREFIX} needs a model name, e.g. --ckpt {API_PREFIX}gpt-4o")
    url = api_base or os.environ.get(BASE_ENV)
    if not url:
        raise HarnessError(f"{API_PREFIX}{model} needs the server's URL: pass --api-base URL (e.g. "
                           f"http://127.0.0.1:8000/v1) or set ${BASE_ENV}")
    url = clean_base_url(url)
    name, digest = api_identity(model, url)
    return CheckpointRef(name=name, path=Path(API_PREFIX + model), kind="api", content_hash=digest,
                         api_base=url, api_model=model)


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


# Provenance beside the weights (the project's training record, PEFT's model card, a recipe's stamp):
# they say how a checkpoint was made, not what it computes, so two builds with the same weights and
# config share one hash (and one cache) whatever their wall times or folder names.
PROVENANCE_FILES = {"manifest.json", "README.md", "recipe.json"}


def content_hash(folder: Path) -> str:
    """sha256 over the sorted relative names, sizes and contents of the folder's files.

    Hidden files (".cache", ...) and the top-level PROVENANCE_FILES are skipped; a PEFT
    adapter_config.json is read as canonical JSON (its target_modules come from a set, in any
    order). A file over 64 MB contributes its first and last 16 MB and its size instead of its
    whole content: checkpoints of real models are many GB, and a changed weight file almost surely
    changes its size, head or tail (safetensors puts its header at the head).
    """
    h = hashlib.sha256()
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.relative_to(folder).as_posix() not in PROVENANCE_FILES
    )
    for p in files:
        if p.name == "adapter_config.json":
            canonical = _canonical_adapter_config(p)
            if canonical is not None:
                h.update(f"{p.relative_to(folder).as_posix()}\0canonical\0".encode() + canonical)
                continue
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


def _canonical_adapter_config(path: Path) -> bytes | None:
    """The adapter config with sorted keys and sorted module lists; None if it is not a JSON object."""
    import json

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list) and all(isinstance(m, str) for m in config[key]):
            config[key] = sorted(config[key])
    return json.dumps(config, sort_keys=True).encode()


# ---- checkpoints the serving engines load ------------------------------------------------------
def save_for_engines(model, processor, out: Path | str, **save_kwargs) -> Path:
    """`model.save_pretrained(out)` in the layout vLLM and `transformers serve` read, plus the processor
    settings they need (processor_config.json). Every full checkpoint the project writes goes through here.

    - Weight names: transformers 5 saves some sub-models without a level its conversion rules strip
      on load (a CLIP/SigLIP vision tower's `vision_model.`); vLLM and older transformers read the
      original layout (`vision_tower.vision_model.*`). The level is put back in the saved file;
      transformers loads both layouts to the same weights.
    - processor_config.json: the processor's own settings (LLaVA: patch_size, the feature select
      strategy), flat, beside the image processor's preprocessor_config.json. Without them
      `transformers serve` fails every image request. `processor` may be None (weights only: the
      folder's processor files are kept, and written from the model config if they lack settings).
    """
    out = Path(out)
    model.save_pretrained(out, **save_kwargs)
    engine_weight_layout(model, out)
    write_processor_config(out, model.config, processor)
    return out


def _stripped_levels(model) -> list[tuple[str, str]]:
    """(saved prefix, level) pairs: sub-models whose saved keys lack `level.` (PrefixChange rules)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import PrefixChange
    except ImportError:  # older transformers saved the original layout already
        return []
    levels = []
    for rule in get_model_conversion_mapping(model):
        if isinstance(rule, PrefixChange) and rule.prefix_to_remove and getattr(rule, "scope_prefix", None):
            levels.append((rule.scope_prefix, rule.prefix_to_remove))
    return levels


def engine_weight_layout(model, folder: Path) -> bool:
    """Rename the saved weights of `folder` to the engines' layout; True if a file changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    levels = _stripped_levels(model)
    if not levels:
        return False

    def renamed(key: str) -> str:
        for prefix, level in levels:
            if key.startswith(prefix + ".") and not key.startswith(f"{prefix}.{level}."):
                return f"{prefix}.{level}.{key[len(prefix) + 1:]}"
        return key

    changed = False
    mapping: dict[str, str] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            keys, metadata = list(f.keys()), f.metadata()
            if all(renamed(k) == k for k in keys):
                continue
            tensors = {renamed(k): f.get_tensor(k) for k in keys}
        mapping.update({k: renamed(k) for k in keys})
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
        changed = True
    index = folder / "model.safetensors.index.json"
    if changed and index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        data["weight_map"] = {mapping.get(k, k): v for k, v in data.get("weight_map", {}).items()}
        index.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return changed


def processor_settings(config, processor=None, tokenizer=None) -> dict:
    """The processor's own settings (not the image processor's), for families that have some
    (harness/models/families.processor_defaults): from `processor`, else from the model config."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    from harness.models.families import family_of, processor_defaults

    model_type = str(getattr(config, "model_type", ""))
    settings = dict(processor_defaults(config, family_of(model_type)))
    if not settings:
        return {}
    settings["processor_class"] = PROCESSOR_MAPPING_NAMES.get(model_type)
    if getattr(processor, "tokenizer", None) is not None:  # a full processor (not an image processor alone)
        for name in list(settings) + ["image_token"]:
            value = getattr(processor, name, None)
            if isinstance(value, (int, str)):
                settings[name] = value
        settings["processor_class"] = type(processor).__name__
    tokenizer = getattr(processor, "tokenizer", None) or tokenizer
    token_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
    if "image_token" not in settings and tokenizer is not None and isinstance(token_id, int):
        settings["image_token"] = tokenizer.convert_ids_to_tokens(token_id)
    return {k: v for k, v in settings.items() if v is not None}


def write_processor_config(folder: Path, config, processor=None) -> None:
    """Put the processor's settings in folder/processor_config.json, flat (every transformers version
    and vLLM read that; the image processor's settings stay in preprocessor_config.json). Settings
    already there win. Nothing is written for a family whose processor has no settings of its own."""
    tokenizer = None
    if getattr(processor, "tokenizer", None) is None and (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
    wanted = processor_settings(config, processor, tokenizer)
    if not wanted:
        return
    path = folder / "processor_config.json"
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    nested = saved.pop("image_processor", None)  # transformers 5 nests it: give it its own file again
    if isinstance(nested, dict) and not (folder / "preprocessor_config.json").is_file():
        (folder / "preprocessor_config.json").write_text(json.dumps(nested, indent=2) + "\n", encoding="utf-8")
    merged = {**wanted, **saved}
    if merged != saved or nested is not None:
        if path.is_symlink():
            path.unlink()  # never write through a link into another checkpoint
        path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n", encoding="utf-8")

