"""Which target faces get swapped: --faces largest|all|N and --reference."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from swapcli.analyse.face import Face, cosine
from swapcli.core.errors import UsageError


def parse_faces(spec: str) -> str | int:
    spec = spec.strip().lower()
    if spec in ("largest", "all"):
        return spec
    if spec.isdigit():
        return int(spec)
    raise UsageError(f"--faces must be 'largest', 'all' or a face index (0 = leftmost), not '{spec}'")


def select_faces(
    faces: Sequence[Face],
    spec: str,
    reference: np.ndarray | None = None,
    threshold: float = 0.3,
    embed: Callable[[Face], np.ndarray] | None = None,
    min_size: float = 0.0,
) -> list[Face]:
    """Faces arrive left to right; N indexes that order (after --min-size)."""
    mode = parse_faces(spec)
    pool = [f for f in faces if f.size >= min_size]
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
