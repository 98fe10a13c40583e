"""Source identity: combining several photos, and --mix.

Several photos of one person average out pose and lighting in the identity
vector; `--mix T` walks the great circle between two identities (spherical
interpolation, as Smooth-Swap and MFIM interpolate ArcFace embeddings), so
the blend keeps the norm that generators were trained on instead of the
shrunken vector a straight average would give.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def normed(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Unit vector t of the way from a to b along the great circle."""
    a, b = normed(a), normed(b)
    cos = float(np.clip(a @ b, -1.0, 1.0))
    theta = np.arccos(cos)
    if theta < 1e-6:
        return normed((1 - t) * a + t * b)
    return normed((np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta))


def combine(embeddings: Sequence[np.ndarray], mix: float | None = None) -> np.ndarray:
    """One raw identity vector from the source photos' raw embeddings.

    Without mix: all photos are one person (mean direction). With mix: the
    first photo is identity A, the mean of the others identity B, and the
    result lies `mix` of the way from A to B. The result has the photos'
    mean norm, for generators fed unnormalised embeddings (GHOST).
    """
    vecs = [np.asarray(e, dtype=np.float64).ravel() for e in embeddings]
    if not vecs:
        raise ValueError("no source embeddings")
    scale = float(np.mean([np.linalg.norm(v) for v in vecs]))
    if mix is None or len(vecs) == 1:
        direction = normed(np.sum([normed(v) for v in vecs], axis=0))
    else:
        other = normed(np.sum([normed(v) for v in vecs[1:]], axis=0))
        direction = slerp(vecs[0], other, mix)
    return (direction * scale).astype(np.float32)
