"""Five-point alignment templates of the published models, and the crop warp.

Each model was trained on crops aligned to one template; feeding it a crop
aligned to another one costs identity and sharpness, so every engine names
its template and this module does the aligning. Point order: left eye, right
eye, nose tip, left mouth corner, right mouth corner.
"""

from __future__ import annotations

import cv2
import numpy as np

from swapcli.core.geometry import similarity

ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
# GHOST / SimSwap ONNX family (facefusion's 'arcface_112_v1'), normalised to the unit square.
ARCFACE_112_V1 = np.array(
    [[0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.5, 0.61154464], [0.37913393, 0.776875],
     [0.62086607, 0.776875]]
)
FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.19366], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]]
)
# GHOST's multi-pose templates (insightface's legacy 112-px set: left profile ... right profile).
GHOST_112 = np.array([
    [[51.642, 50.115], [57.617, 49.990], [35.740, 69.007], [51.157, 89.050], [57.025, 89.702]],
    [[45.031, 50.118], [65.568, 50.872], [39.677, 68.111], [45.177, 86.190], [64.246, 86.758]],
    [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]],
    [[46.845, 50.872], [67.382, 50.118], [72.737, 68.111], [48.167, 86.758], [67.236, 86.190]],
    [[54.796, 49.990], [60.771, 50.115], [76.673, 69.007], [55.388, 89.702], [61.257, 89.050]],
])

TEMPLATES = ("arcface_112", "arcface_128", "arcface_112_v1", "ffhq_512", "ghost_224")


def template_points(name: str, size: int) -> np.ndarray:
    """The template's five points for a crop of `size` pixels (scaled from its native size)."""
    if name == "arcface_112":
        return ARCFACE_112 * (size / 112.0)
    if name == "arcface_128":  # inswapper: arcface_112 shifted 8 px right on a 128 canvas
        return (ARCFACE_112 + np.array([8.0, 0.0])) * (size / 128.0)
    if name == "arcface_112_v1":
        return ARCFACE_112_V1 * size
    if name == "ffhq_512":
        return FFHQ_512 * (size / 512.0)
    if name == "ghost_224":  # frontal pose; align_matrix() picks the best-fitting pose
        return GHOST_112[2] * (size / 112.0)
    raise ValueError(f"unknown alignment template '{name}'")


def align_matrix(kps: np.ndarray, name: str, size: int) -> np.ndarray:
    """2x3 similarity taking frame pixels to crop pixels.

    GHOST fits each of its five pose templates and keeps the one with the
    smallest residual, so a turned head is not squeezed into a frontal crop.
    """
    kps = np.asarray(kps, dtype=np.float64)
    if name != "ghost_224":
        return similarity(kps, template_points(name, size))
    best, best_err = None, np.inf
    for pose in GHOST_112:
        dst = pose * (size / 112.0)
        m = similarity(kps, dst)
        err = float(np.linalg.norm(kps @ m[:, :2].T + m[:, 2] - dst, axis=1).sum())
        if err < best_err:
            best, best_err = m, err
    return best


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
