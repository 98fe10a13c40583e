"""Read an image for processing: upright, BGR uint8, alpha and EXIF kept aside.

Pillow does the decoding so that EXIF orientation, 16-bit, grayscale, CMYK
and alpha images all arrive in one form, and decompression bombs are refused.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapcli.core.errors import InputError

MAX_PIXELS = 120_000_000  # refuse larger images (a 100000x100000 header is a bomb)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class LoadedImage:
    path: Path
    bgr: np.ndarray  # upright (EXIF applied), HxWx3 uint8
    alpha: np.ndarray | None  # upright HxW uint8, when the file had transparency
    orientation: int  # EXIF orientation of the file (1 = none)
    exif: bytes | None  # raw EXIF block to carry over to the output
    icc: bytes | None
    format: str
    grey: bool = False  # a greyscale picture (stored grey, or colour channels all equal): stays grey


def read_image(path: str | Path) -> LoadedImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():  # a named pipe would block the open below forever
        raise InputError(f"{path}: not a regular file (a pipe, socket or device?)")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format or ""
                exif = im.getexif()
                orientation = int(exif.get(0x0112, 1) or 1)
                exif_bytes = im.info.get("exif")
                icc = im.info.get("icc_profile")
                im.load()
                upright = ImageOps.exif_transpose(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image is too large (over {MAX_PIXELS // 1_000_000} megapixels)") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot decode image ({exc})".splitlines()[0]) from None
    if upright.width < 16 or upright.height < 16:
        raise InputError(f"{path}: image is too small ({upright.width}x{upright.height}) to hold a face")
    alpha = None
    mode = upright.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3].copy()
        rgb = np.asarray(rgba)[..., :3]
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(upright, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2)
    else:
        rgb = np.asarray(upright.convert("RGB"))
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    grey = mode in ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I") or has_no_colour(bgr, 2, step=3)
    return LoadedImage(path, bgr, alpha, orientation, exif_bytes, icc, fmt, grey)


def has_no_colour(image: np.ndarray, tolerance: int, step: int = 1) -> bool:
    """True for a greyscale picture, even one stored in colour: every pixel's channels agree within
    `tolerance` (checked on every `step`-th row and column)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    px = image[::step, ::step].astype(np.int16)
    return bool((px.max(2) - px.min(2)).max() <= tolerance)
