"""The embedded default engine: a landmark-driven morph that needs no weights.

Identity is carried by geometry and texture: the source's own eye, brow,
nose and mouth layout is placed inside the target's face outline, and the
source's pixels are warped there piecewise-affinely over the 106 landmarks
plus forehead and ROI-border anchors. Local colour/lighting comes from the
target, so the face sits in the target's light. Expression that would smear
(an open mouth) is kept from the target.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from swapcli.analyse.face import (
    BROWS,
    CONTOUR,
    INNER_LIPS,
    LEFT_EYE,
    MOUTH,
    RIGHT_EYE,
    Face,
    mirror_face,
    mouth_opening,
)
from swapcli.analyse.pose import yaw_sign
from swapcli.core.geometry import apply, expand_box, invert, similarity, soft_mean
from swapcli.swap.base import SourceFace, SwapResult

OPEN_MOUTH = 0.12  # inner-lip gap / mouth width above which the target's mouth is kept
ROI_MARGIN = 0.45  # ROI = landmark box grown by this x its larger side
COLOUR_SIGMA = 0.25  # local colour window, x face width (smaller washes out identity)


def forehead(lmk: np.ndarray) -> np.ndarray:
    """Points above the brows, so the warp has anchors over the forehead."""
    eyes = (lmk[LEFT_EYE].mean(0) + lmk[RIGHT_EYE].mean(0)) / 2
    up = eyes - lmk[MOUTH].mean(0)
    return lmk[BROWS] + 0.55 * up


def _triangle_maps(dst: np.ndarray, src: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Affine matrices (T, 3, 2) taking each dst triangle to its src triangle."""
    d = dst[tris]  # (T, 3, 2)
    s = src[tris]
    dh = np.concatenate([d, np.ones((len(tris), 3, 1))], axis=2)  # (T, 3, 3)
    ok = np.abs(np.linalg.det(dh)) > 1e-6
    mats = np.zeros((len(tris), 3, 2))
    mats[ok] = np.linalg.solve(dh[ok], s[ok])
    return mats


def piecewise_affine_maps(
    dst: np.ndarray, src: np.ndarray, shape: tuple[int, int], fallback: np.ndarray, step: int = 1
):
    """Dense (map_x, map_y) for cv2.remap: ROI pixel -> source pixel.

    With step > 1 the maps are computed on a coarser grid and interpolated:
    they are piecewise linear, so this only rounds triangle edges by < step px.
    """
    from scipy.spatial import Delaunay

    h, w = shape
    if step > 1:
        # cv2.resize puts coarse pixel c at full coordinate (c + 0.5) * step - 0.5.
        hs, ws = -(-h // step), -(-w // step)
        half = 0.5 * step - 0.5
        fb = fallback.copy()
        fb[:, :2] = fallback[:, :2] * step
        fb[:, 2] = fallback[:, 2] + fallback[:, :2].sum(axis=1) * half
        mx, my = piecewise_affine_maps((dst - half) / step, src, (hs, ws), fb)
        return (cv2.resize(mx, (ws * step, hs * step), interpolation=cv2.INTER_LINEAR)[:h, :w],
                cv2.resize(my, (ws * step, hs * step), interpolation=cv2.INTER_LINEAR)[:h, :w])
    tris = Delaunay(dst).simplices
    mats = _triangle_maps(dst, src, tris)
    index = np.full((h, w), -1, dtype=np.int32)
    for i, tri in enumerate(tris):
        cv2.fillConvexPoly(index, np.round(dst[tri]).astype(np.int32), int(i))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # Pixels no triangle covers follow the global similarity.
    fb = np.zeros((3, 2))
    fb[:2, :] = fallback[:, :2].T
    fb[2, :] = fallback[:, 2]
    mats = np.concatenate([mats, fb[None]], axis=0).astype(np.float32)
    m = mats[index]  # index -1 picks the fallback appended last
    map_x = m[..., 0, 0] * xs + m[..., 1, 0] * ys + m[..., 2, 0]
    map_y = m[..., 0, 1] * xs + m[..., 1, 1] * ys + m[..., 2, 1]
    return map_x, map_y


def destination_landmarks(target: np.ndarray, source_in_target: np.ndarray) -> tuple[np.ndarray, bool]:
    """Where each of the 106 points goes: target outline, source features.

    Returns the points and whether the target's mouth is open (then the mouth
    keeps the target's place and shape so its inside can show through).
    """
    dst = target.copy()
    inner = np.setdiff1d(np.arange(33, 106), MOUTH)
    dst[inner] = source_in_target[inner]
    mouth_open = mouth_opening(target) > OPEN_MOUTH
    if not mouth_open:
        ct, cs = target[MOUTH].mean(0), source_in_target[MOUTH].mean(0)
        wt = np.ptp(target[MOUTH][:, 0]) + 1e-6
        ws = np.ptp(source_in_target[MOUTH][:, 0])
        dst[MOUTH] = cs + (target[MOUTH] - ct) * (ws / wt)
    return dst, mouth_open


class MorphEngine:
    """Embedded default: no downloaded weights, runs anywhere."""

    name = "morph"
    uses_embedding = False

    def __init__(self, colour: bool = True) -> None:
        self.colour = colour

    @staticmethod
    def _oriented(source: SourceFace, mirrored: bool) -> tuple[np.ndarray, Face]:
        if not mirrored:
            return source.image, source.face
        if "mirror" not in source.cache:
            img = np.ascontiguousarray(source.image[:, ::-1])
            source.cache["mirror"] = (img, mirror_face(source.face, source.image.shape[1]))
        return source.cache["mirror"]

    @staticmethod
    def choose(target: Face, sources: Sequence[SourceFace]) -> tuple[SourceFace, bool]:
        """The source photo (and orientation) whose head turn best matches the target's."""
        want = yaw_sign(target.kps)
        best = None
        for src in sources:
            turn = yaw_sign(src.face.kps)
            for mirrored, value in ((False, turn), (True, -turn)):
                cost = abs(value - want) + (0.02 if mirrored else 0.0)  # prefer unmirrored on ties
                if best is None or cost < best[0]:
                    best = (cost, src, mirrored)
        assert best is not None
        return best[1], best[2]

    def swap(self, frame: np.ndarray, target: Face, sources: Sequence[SourceFace]) -> SwapResult:
        if target.landmarks is None:
            raise ValueError("the morph engine needs 106-point landmarks on the target")
        source, mirrored = self.choose(target, sources)
        src_img, src_face = self._oriented(source, mirrored)
        lt = target.landmarks.astype(np.float64)
        ls = src_face.landmarks.astype(np.float64)

        to_target = similarity(ls, lt)
        ls_t = apply(to_target, ls)
        dst, mouth_open = destination_landmarks(lt, ls_t)

        x0, y0, x1, y1 = expand_box(np.vstack([lt, forehead(lt)]), ROI_MARGIN, frame.shape)
        off = np.array([x0, y0], dtype=np.float64)
        w, h = x1 - x0, y1 - y0
        ring = np.array(
            [[0, 0], [w / 2, 0], [w - 1, 0], [w - 1, h / 2], [w - 1, h - 1], [w / 2, h - 1], [0, h - 1], [0, h / 2]]
        )
        back = invert(to_target)
        dst_all = np.vstack([dst - off, forehead(dst) - off, ring])
        src_all = np.vstack([ls, forehead(ls), apply(back, ring + off)])
        fallback = back.copy()
        fallback[:, 2] += back[:, :2] @ off
        step = 2 if max(h, w) > 256 else 1
        map_x, map_y = piecewise_affine_maps(dst_all, src_all, (h, w), fallback, step)
        warped = cv2.remap(src_img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        warped = warped.astype(np.float32)
        target_roi = frame[y0:y1, x0:x1].astype(np.float32)

        face_w = float(np.ptp(lt[CONTOUR][:, 0]))
        if self.colour:
            region = np.zeros((h, w), dtype=np.uint8)
            hull = cv2.convexHull(np.round(dst - off).astype(np.int32))  # skin only: no hair
            cv2.fillConvexPoly(region, hull, 255)
            weight = region.astype(np.float32) / 255.0
            sigma = max(2.0, COLOUR_SIGMA * face_w)
            warped = warped - soft_mean(warped, weight, sigma) + soft_mean(target_roi, weight, sigma)
            np.clip(warped, 0, 255, out=warped)

        keep = None
        if mouth_open:
            keep_u8 = np.zeros((h, w), dtype=np.uint8)
            cv2.fillPoly(keep_u8, [np.round(lt[INNER_LIPS] - off).astype(np.int32)], 255)
            k = max(3, int(0.04 * face_w) | 1)
            keep = cv2.GaussianBlur(keep_u8, (k, k), 0).astype(np.float32) / 255.0

        return SwapResult(
            roi=(x0, y0, x1, y1),
            image=warped,
            keep=keep,
            info={"mirrored": mirrored, "source": str(source.path) if source.path else None, "mouth_open": mouth_open},
        )
