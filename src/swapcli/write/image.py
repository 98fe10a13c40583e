"""Encode an image in the format its extension names, with the target's EXIF,
orientation, ICC profile and alpha carried over, and write it atomically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from swapcli.core.errors import OutputError
from swapcli.read.image import LoadedImage
from swapcli.write.atomic import write_bytes

FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}

# Pillow transpose that undoes exif_transpose for each EXIF orientation.
_UNDO = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_90", 7: "TRANSVERSE", 8: "ROTATE_270"}


def format_for(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"{path}: unsupported output format '{path.suffix}' (use .jpg, .png or .webp)")
    return fmt


def encode(bgr: np.ndarray, like: LoadedImage, fmt: str, quality: int = 95) -> bytes:
    from PIL import Image

    rgb = np.ascontiguousarray(bgr[..., ::-1])
    if like.alpha is not None and fmt in ("PNG", "WEBP"):
        im = Image.fromarray(np.dstack([rgb, like.alpha]), "RGBA")
    else:
        im = Image.fromarray(rgb, "RGB")
    if like.orientation in _UNDO:
        # Store pixels as the target stored them, so its orientation tag still applies.
        im = im.transpose(getattr(Image.Transpose, _UNDO[like.orientation]))
    params: dict = {}
    if like.exif:
        params["exif"] = like.exif
    if like.icc:
        params["icc_profile"] = like.icc
    if fmt == "JPEG":
        params.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "WEBP":
        params.update(quality=quality, method=4)
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def write_image(path: Path, bgr: np.ndarray, like: LoadedImage, quality: int = 95) -> None:
    write_bytes(Path(path), encode(bgr, like, format_for(Path(path)), quality))
