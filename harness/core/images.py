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


def undecodable_image(ref: ImageRef) -> str | None:
    """Why `ref` cannot be decoded (zero bytes, truncated, not an image, a decompression bomb), or None.

    Run on every image before a model loads, so a broken file costs a second, not a model load.
    """
    import warnings

    from PIL import Image

    try:
        data = ref if isinstance(ref, bytes) else Path(ref).read_bytes()
        if not data:
            return "empty file"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # oversized counts as broken
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reading every byte
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return f"decompression bomb ({str(e).split('.')[0]})"
    except Exception as e:  # PIL raises several types for corrupt files
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def missing_images(refs: list[ImageRef]) -> list[Path]:
    return [Path(r) for r in refs if not isinstance(r, bytes) and not Path(r).is_file()]
