"""Lazy image loading: items hold references, pixels are read only when a model needs them."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

from harness.errors import HarnessError
from harness.core.types import ImageRef


def open_image(ref: ImageRef, blank: bool = False):
    """Return an RGB PIL image; `blank` gives a same-size mid-grey image (the --blind ablation)."""
    from PIL import Image

    try:
        if isinstance(ref, bytes):
            img = Image.open(io.BytesIO(ref))
        else:
            img = Image.open(ref)
        img = img.convert("RGB")
    except FileNotFoundError:
        raise HarnessError(
            f"image not found: {ref}; point --data-dir at a folder holding the benchmark's images"
        ) from None
    except Exception as e:  # PIL raises several types for corrupt files
        raise HarnessError(f"cannot read image {ref if not isinstance(ref, bytes) else '<bytes>'}: {e}") from None
    if blank:
        return Image.new("RGB", img.size, (128, 128, 128))
    return img


def image_digest(ref: ImageRef) -> str:
    """Content hash of an image reference (file bytes), for cache keys."""
    h = hashlib.sha256()
    if isinstance(ref, bytes):
        h.update(ref)
    else:
        try:
            h.update(Path(ref).read_bytes())
        except FileNotFoundError:
            raise HarnessError(
                f"image not found: {ref}; point --data-dir at a folder holding the benchmark's images"
            ) from None
    return h.hexdigest()[:16]


def missing_images(refs: list[ImageRef]) -> list[Path]:
    return [Path(r) for r in refs if not isinstance(r, bytes) and not Path(r).is_file()]
