"""Pixel boost: k times the detail from a generator with a small input (facefusion's method).

A 128-px generator such as inswapper looks blurry on large faces because the face is
shrunk to 128 px and the result enlarged back. With a boost of k·S (S = the model's
input side) the face is aligned at k·S and its pixels are dealt into k² interleaved
S-px sub-images: pixel (y, x) goes to sub-image (y mod k, x mod k), at (y // k, x // k).
Each sub-image is the whole face at the model's scale, sampled at a sub-pixel offset, so
the model sees what it was trained on; all k² run with the same source latent in one
batch, and interleaving the results back gives a k·S face.
"""

from __future__ import annotations

import numpy as np

from swapcli.core.errors import UsageError

BOOSTS = (128, 256, 384, 512)  # --pixel-boost values (px of the aligned crop)


def allowed(size: int) -> tuple[int, ...]:
    """The boosts that fit a model of input side `size`: multiples of it (k = boost / size)."""
    return tuple(b for b in BOOSTS if b >= size and b % size == 0)


def factor(boost: int | None, size: int, engine: str) -> int:
    """k for --pixel-boost `boost` on an engine whose generator takes `size` px (None: 1)."""
    if boost is None:
        return 1
    fits = allowed(size)
    if boost not in fits:
        if not fits:
            raise UsageError(f"--pixel-boost does not fit {engine}: its generator takes {size} px, "
                             f"which none of {', '.join(map(str, BOOSTS))} is a multiple of")
        raise UsageError(f"--pixel-boost {boost}: {engine} generates {size}-px faces; "
                         f"choose {', '.join(map(str, fits))}")
    return boost // size


def split(crops: np.ndarray, k: int) -> np.ndarray:
    """(B, kS, kS, C) -> (B·k², S, S, C): sub-image b·k² + i·k + j holds pixels (y ≡ i, x ≡ j mod k)."""
    if k == 1:
        return crops
    b, h, w, c = crops.shape
    s = h // k
    x = crops.reshape(b, s, k, s, k, c).transpose(0, 2, 4, 1, 3, 5)  # b, i, j, y // k, x // k, c
    return np.ascontiguousarray(x).reshape(b * k * k, s, s, c)


def merge(subs: np.ndarray, k: int) -> np.ndarray:
    """The inverse of split: (B·k², S, S, C) -> (B, kS, kS, C)."""
    if k == 1:
        return subs
    n, s, _, c = subs.shape
    b = n // (k * k)
    x = subs.reshape(b, k, k, s, s, c).transpose(0, 3, 1, 4, 2, 5)  # b, y // k, i, x // k, j, c
    return np.ascontiguousarray(x).reshape(b, s * k, s * k, c)
