"""GHOST's landmark-adaptive Gaussian mask.

The swapped face's outline is compared with the target's: when the swapped
face comes out narrower, the target's own cheeks would show beyond it, so the
mask shrinks and softens; when wider, it grows and sharpens. Constants are
GHOST's, defined on a 224-px crop and scaled to the ROI here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swapcli.analyse.face import LEFT_BROW, LEFT_EYE, RIGHT_BROW, RIGHT_EYE
from swapcli.core.geometry import scale_of, similarity, smooth_blur

# GHOST's frontal 224-px template (its 112-px template x2), 5-point order.
GHOST_224 = 2.0 * np.array(
    [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]]
)
LEFT_SIDE = (1, 2, 13)
RIGHT_SIDE = (17, 18, 29)


@dataclass(frozen=True)
class MaskParams:
    """In 224-crop pixels. erode < 0 means dilate."""

    erode: int
    sigma_x: float
    sigma_y: float
    lift: float

    def to_json(self) -> dict:
        return {"erode": self.erode, "sigma_x": self.sigma_x, "sigma_y": self.sigma_y, "lift": self.lift}


def crop_scale(kps: np.ndarray) -> float:
    """224-crop pixels per frame pixel for this face."""
    return scale_of(similarity(kps, GHOST_224))


def outline_offset(generated: np.ndarray, target: np.ndarray, scale: float = 1.0) -> float:
    """How far the swapped outline lies inside the target's (224-crop px, >0 = narrower)."""
    left = sum(generated[i, 0] - target[i, 0] for i in LEFT_SIDE)
    right = sum(target[i, 0] - generated[i, 0] for i in RIGHT_SIDE)
    return float(max(left, right) * scale)


def params_for(offset: float) -> MaskParams:
    if offset > 6:
        return MaskParams(15, 15.0, 10.0, 2.7)
    if offset > 3:
        return MaskParams(10, 10.0, 8.0, 2.0)
    if offset < -3:
        return MaskParams(-5, 5.0, 10.0, 0.5)
    return MaskParams(5, 5.0, 5.0, 2.0)


def lift_brows(landmarks: np.ndarray, lift: float) -> np.ndarray:
    """Move the upper brow points away from the eyelid so the brows fall inside the mask."""
    pts = landmarks.astype(np.float64).copy()
    for brow, eye in ((LEFT_BROW, LEFT_EYE), (RIGHT_BROW, RIGHT_EYE)):
        centre = pts[eye].mean(0)
        top = brow[np.argsort(-np.linalg.norm(pts[brow] - centre, axis=1))[:5]]
        for i in top:
            lid = pts[eye][np.argmin(np.linalg.norm(pts[eye] - pts[i], axis=1))]
            pts[i] = pts[i] + lift * 0.5 * (pts[i] - lid)
    return pts


def ghost_mask(generated: np.ndarray, params: MaskParams, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Float32 mask in [0, 1] over an ROI of `shape`; landmarks in ROI pixels."""
    h, w = shape
    pts = lift_brows(generated, params.lift)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(cv2.convexHull(pts.astype(np.float32))).astype(np.int32), 255)
    k = int(round(abs(params.erode) / scale))
    if k >= 1:
        kernel = np.ones((k, k), np.uint8)
        mask = cv2.erode(mask, kernel) if params.erode > 0 else cv2.dilate(mask, kernel)
    sx, sy = params.sigma_x / scale, params.sigma_y / scale
    border = min(int(2 * sy), h // 2, w // 2)
    if border > 0:
        mask[:border, :] = 0
        mask[-border:, :] = 0
        mask[:, :border] = 0
        mask[:, -border:] = 0
    return smooth_blur(mask.astype(np.float32) * (1.0 / 255.0), sx, sy)
