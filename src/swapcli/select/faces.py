"""Which target faces get swapped: --faces largest|all|N, --face-order and --reference."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from swapcli.analyse.face import Face, cosine
from swapcli.core.errors import UsageError
from swapcli.core.options import DEFAULT_MIN_SHARE


# --face-order: how faces are numbered for --faces N (and listed by `swapcli faces`).
FACE_ORDERS = ("left-right", "right-left", "top-bottom", "bottom-top", "small-large", "large-small",
               "best-worst", "worst-best")
DEFAULT_ORDER = "left-right"


def parse_face_order(order: str) -> str:
    value = order.strip().lower()
    if value not in FACE_ORDERS:
        raise UsageError(f"--face-order must be one of {', '.join(FACE_ORDERS)}, not '{order}'")
    return value


def order_key(order: str) -> Callable[[Face], tuple[float, float]]:
    """Sort key of a face for `order` (ascending); ties fall back to left to right."""
    order = parse_face_order(order)

    def key(face: Face) -> tuple[float, float]:
        x, y = face.center
        main = {"left-right": x, "right-left": -x, "top-bottom": y, "bottom-top": -y,
                "small-large": face.area, "large-small": -face.area,
                "best-worst": -face.score, "worst-best": face.score}[order]
        return (float(main), x)

    return key


def order_faces(faces: Sequence[Face], order: str = DEFAULT_ORDER) -> list[Face]:
    """Faces in the order --faces N counts them (stable, so equal keys keep detector order)."""
    return sorted(faces, key=order_key(order))


def parse_faces(spec: str) -> str | int:
    spec = spec.strip().lower()
    if spec in ("largest", "all"):
        return spec
    if spec.isdigit():
        return int(spec)
    raise UsageError(f"--faces must be 'largest', 'all' or a face index (0 = first in --face-order), not '{spec}'")


MIN_SHARE = DEFAULT_MIN_SHARE  # with --faces all|N, faces smaller than this share of the largest face are ignored
IMAGE_FLOOR = 0.02  # ... and faces smaller than this share of the picture's shorter side


def size_filter(faces: Sequence[Face], spec: str, min_size: float = 0.0, min_share: float = MIN_SHARE,
                shape: tuple[int, ...] | None = None) -> tuple[list[Face], list[dict]]:
    """Faces big enough to swap, and the skipped ones with why.

    `min_size` (px) always applies. With --faces all or N, background faces are left alone too:
    those under `min_share` of the largest face, or under IMAGE_FLOOR x `min_share` / MIN_SHARE of
    the picture's shorter side (crowds, blurred passers-by); `min_share` 0 turns both off.
    """
    mode = parse_faces(spec)
    kept, skipped = [], []
    largest = max((f.size for f in faces), default=0.0)
    floor = IMAGE_FLOOR * (min_share / MIN_SHARE) * min(shape[:2]) if shape is not None else 0.0
    for f in faces:
        why = None
        if f.size < min_size:
            why = f"smaller than --min-face-size {min_size:g} px"
        elif mode != "largest" and min_share > 0:
            if f.size < min_share * largest:
                why = f"under {min_share:g} of the largest face ({largest:.0f} px)"
            elif f.size < floor:
                why = f"under {floor:.0f} px ({IMAGE_FLOOR * min_share / MIN_SHARE:.3g} of the picture)"
        if why is None:
            kept.append(f)
        else:
            skipped.append({"bbox": [round(float(v), 1) for v in f.bbox], "size": round(f.size, 1), "why": why})
    return kept, skipped


def select_faces(
    faces: Sequence[Face],
    spec: str,
    reference: np.ndarray | None = None,
    threshold: float = 0.3,
    embed: Callable[[Face], np.ndarray] | None = None,
    order: str = DEFAULT_ORDER,
) -> list[Face]:
    """Faces already through size_filter; N indexes them in `order` (--face-order)."""
    mode = parse_faces(spec)
    pool = order_faces(faces, order)
    if reference is not None:
        if embed is None:
            raise ValueError("reference selection needs an embedder")
        matched = []
        for f in pool:
            vec = f.embedding if f.embedding is not None else embed(f)
            f.extra["reference_similarity"] = cosine(vec, reference)
            if f.extra["reference_similarity"] >= threshold:
                matched.append(f)
        pool = matched
    if not pool:
        return []
    if mode == "all":
        return list(pool)
    if mode == "largest":
        return [max(pool, key=lambda f: f.area)]
    return [pool[mode]] if mode < len(pool) else []
