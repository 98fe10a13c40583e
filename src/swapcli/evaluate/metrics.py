"""Quality metrics of a swapped face against its target and source (pure functions).

Everything here works on what the project's analyser returns (detection box,
5 keypoints, 106 landmarks of insightface 2d106det, L2-normalised ArcFace
embeddings), so the numbers come from the same models the pipeline uses.
docs/metrics.md gives each metric's meaning, range and a good value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from swapcli.analyse.face import (
    LEFT_EYE,
    LIP_PAIRS,
    MOUTH_CORNERS,
    RIGHT_EYE,
    Face,
    cosine,
)
from swapcli.analyse.pose import head_pose

# 2d106det eye layout (checked on photos): two corners, two pupil points, and
# six lid points per eye; the lids are what open and close.
EYE_CORNERS = {"left": (35, 39), "right": (89, 93)}
EYE_PUPILS = frozenset({34, 38, 88, 92})
EYES = np.concatenate([LEFT_EYE, RIGHT_EYE])
EXPRESSION_FEATURES = ("mouth_open", "mouth_width", "eye_open_left", "eye_open_right")

MIN_IOU = 0.3  # a result face belongs to a target face when their boxes overlap at least this much


# --------------------------------------------------------------------------- matching


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def match_faces(targets: Sequence[Face], results: Sequence[Face],
                min_iou: float = MIN_IOU) -> list[tuple[Face | None, float]]:
    """For each target face, the result face at the same place (greedy by IoU), or None.

    Position, not identity: a good swap changes who the face is, not where it is.
    """
    pairs = sorted(((iou(t.bbox, r.bbox), i, j) for i, t in enumerate(targets) for j, r in enumerate(results)),
                   reverse=True)
    out: list[tuple[Face | None, float]] = [(None, 0.0)] * len(targets)
    used_t: set[int] = set()
    used_r: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if i in used_t or j in used_r:
            continue
        out[i] = (results[j], overlap)
        used_t.add(i)
        used_r.add(j)
    return out


# --------------------------------------------------------------------------- geometry of the 106 points


def eye_centres(lmk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lmk = np.asarray(lmk, dtype=np.float64)
    return lmk[LEFT_EYE].mean(axis=0), lmk[RIGHT_EYE].mean(axis=0)


def interocular(lmk: np.ndarray) -> float:
    """Distance between the two eye centres, the length unit of the shape metrics."""
    left, right = eye_centres(lmk)
    return float(np.linalg.norm(right - left)) + 1e-6


def _eye_opening(lmk: np.ndarray, group: np.ndarray, corners: tuple[int, int], iod: float) -> float:
    """Extent of an eye's lid points across its corner axis, in inter-ocular distances."""
    axis = lmk[corners[1]] - lmk[corners[0]]
    axis = axis / (np.linalg.norm(axis) + 1e-9)
    normal = np.array([-axis[1], axis[0]])
    lids = lmk[[int(i) for i in group if int(i) not in EYE_PUPILS]]
    return float(np.ptp(lids @ normal)) / iod


def expression_features(lmk: np.ndarray) -> dict[str, float]:
    """Pose-independent expression measures, each divided by the inter-ocular distance.

    mouth_open: mean inner-lip gap; mouth_width: corner to corner; eye_open_*:
    lid opening of each (image-left / image-right) eye.
    """
    lmk = np.asarray(lmk, dtype=np.float64)
    iod = interocular(lmk)
    gaps = np.linalg.norm(lmk[LIP_PAIRS[:, 0]] - lmk[LIP_PAIRS[:, 1]], axis=1)
    return {
        "mouth_open": float(gaps.mean()) / iod,
        "mouth_width": float(np.linalg.norm(lmk[MOUTH_CORNERS[1]] - lmk[MOUTH_CORNERS[0]])) / iod,
        "eye_open_left": _eye_opening(lmk, LEFT_EYE, EYE_CORNERS["left"], iod),
        "eye_open_right": _eye_opening(lmk, RIGHT_EYE, EYE_CORNERS["right"], iod),
    }


def expression_error(target_lmk: np.ndarray, result_lmk: np.ndarray) -> tuple[float, dict[str, float]]:
    """Mean absolute difference of the expression features (and each difference, signed result - target)."""
    t, r = expression_features(target_lmk), expression_features(result_lmk)
    diffs = {k: r[k] - t[k] for k in EXPRESSION_FEATURES}
    return float(np.mean([abs(v) for v in diffs.values()])), diffs


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) taking src onto dst: 2x3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var = (s ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ fix) / var) if var > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def apply_affine(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def eye_error(target_lmk: np.ndarray, result_lmk: np.ndarray) -> float:
    """GHOST's eye metric: mean distance of the 20 eye landmarks after aligning the
    result's 106 points onto the target's (similarity), in inter-ocular distances."""
    t = np.asarray(target_lmk, dtype=np.float64)
    aligned = apply_affine(similarity_fit(result_lmk, t), result_lmk)
    return float(np.linalg.norm(aligned[EYES] - t[EYES], axis=1).mean()) / interocular(t)


def angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def pose_error(target: Face, result: Face) -> dict[str, float]:
    """Absolute yaw, pitch and roll differences (degrees) of the two head poses, and their mean."""
    pt, pr = head_pose(target.kps), head_pose(result.kps)
    err = {"yaw": angle_diff(pt.yaw, pr.yaw), "pitch": angle_diff(pt.pitch, pr.pitch),
           "roll": angle_diff(pt.roll, pr.roll)}
    err["mean"] = float(np.mean(list(err.values())))
    return err


# --------------------------------------------------------------------------- identity


def mean_identity(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """One identity from several photos: the re-normalised mean embedding."""
    vec = np.mean(np.stack([np.asarray(e, dtype=np.float64) for e in embeddings]), axis=0)
    return vec / (np.linalg.norm(vec) + 1e-12)


def retrieval_rank(result_emb: np.ndarray, source_emb: np.ndarray,
                   gallery: Sequence[np.ndarray]) -> int:
    """Rank (1 = nearest) of the source among the source + gallery identities, by cosine to the result."""
    own = cosine(result_emb, source_emb)
    return 1 + sum(cosine(result_emb, g) > own for g in gallery)


# --------------------------------------------------------------------------- face metrics


@dataclass
class FaceMetrics:
    """The per-face numbers of one target face and its result face."""

    id_source: float
    id_target: float
    pose_error: dict[str, float]
    expression_error: float
    expression_diff: dict[str, float]
    eye_error: float
    retrieval_rank: int | None = None

    @property
    def id_margin(self) -> float:
        return self.id_source - self.id_target

    def to_json(self) -> dict:
        return {
            "id_source": round(self.id_source, 4),
            "id_target": round(self.id_target, 4),
            "id_margin": round(self.id_margin, 4),
            "pose_error": {k: round(v, 2) for k, v in self.pose_error.items()},
            "expression_error": round(self.expression_error, 4),
            "expression_diff": {k: round(v, 4) for k, v in self.expression_diff.items()},
            "eye_error": round(self.eye_error, 4),
            "retrieval_rank": self.retrieval_rank,
        }


def face_metrics(target: Face, result: Face, source_emb: np.ndarray,
                 gallery: Sequence[np.ndarray] | None = None) -> FaceMetrics:
    """All per-face metrics; both faces need landmarks and embeddings."""
    assert target.landmarks is not None and result.landmarks is not None
    assert target.embedding is not None and result.embedding is not None
    expr, diffs = expression_error(target.landmarks, result.landmarks)
    return FaceMetrics(
        id_source=cosine(result.embedding, source_emb),
        id_target=cosine(result.embedding, target.embedding),
        pose_error=pose_error(target, result),
        expression_error=expr,
        expression_diff=diffs,
        eye_error=eye_error(target.landmarks, result.landmarks),
        retrieval_rank=retrieval_rank(result.embedding, source_emb, gallery) if gallery else None,
    )


def summarise(items: Sequence[FaceMetrics], gallery_size: int | None) -> dict:
    """Means over faces (or sampled frames); retrieval as top-1 rate and mean rank."""
    if not items:
        return {}
    def mean(xs) -> float:
        return round(float(np.mean(list(xs))), 4)

    pose = {k: round(float(np.mean([m.pose_error[k] for m in items])), 2) for k in ("yaw", "pitch", "roll", "mean")}
    out = {
        "id_source": mean(m.id_source for m in items),
        "id_target": mean(m.id_target for m in items),
        "id_margin": mean(m.id_margin for m in items),
        "pose_error": pose,
        "expression_error": mean(m.expression_error for m in items),
        "eye_error": mean(m.eye_error for m in items),
        "retrieval": None,
    }
    ranks = [m.retrieval_rank for m in items if m.retrieval_rank is not None]
    if gallery_size and ranks:
        out["retrieval"] = {"candidates": gallery_size + 1, "top1": mean(r == 1 for r in ranks),
                            "mean_rank": mean(ranks)}
    return out


# --------------------------------------------------------------------------- temporal


def second_difference(prev: np.ndarray, cur: np.ndarray, nxt: np.ndarray, scale: float) -> float:
    """Mean |L(t+1) - 2 L(t) + L(t-1)| over the landmarks, as a percentage of `scale` (face size).

    Zero for still or steadily moving landmarks; large when points shake from frame to frame.
    """
    acc = np.asarray(nxt, np.float64) - 2 * np.asarray(cur, np.float64) + np.asarray(prev, np.float64)
    return float(np.linalg.norm(acc, axis=1).mean()) / max(scale, 1e-6) * 100.0


Region = tuple[tuple[int, int, int, int], np.ndarray]


def face_region(shape: tuple[int, ...], lmk: np.ndarray, shrink: float = 0.1) -> Region | None:
    """The inside of the face (convex hull of the 106 points, eroded by `shrink` x its width):
    ((x0, y0, x1, y1) box, uint8 mask of that box); None when it leaves the frame entirely."""
    h, w = shape[:2]
    pts = np.asarray(lmk, dtype=np.float64)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    hull = cv2.convexHull(np.round(pts - [x0, y0]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    k = int(round(shrink * float(np.ptp(pts[:, 0]))))
    if k >= 1:
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    if not mask.any():
        return None
    return (x0, y0, x1, y1), mask


def mean_colour(image: np.ndarray, region: Region | None) -> np.ndarray | None:
    """Mean BGR (0-255) inside a face_region, or None."""
    if region is None:
        return None
    (x0, y0, x1, y1), mask = region
    return np.asarray(cv2.mean(image[y0:y1, x0:x1], mask=mask)[:3], dtype=np.float64)


def colour_step(a: np.ndarray, b: np.ndarray) -> float:
    """Frame-to-frame change of mean face colour: mean absolute channel difference (0-255 scale)."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).mean())


def relative(result: float | None, target: float | None) -> dict | None:
    """A temporal score of the result beside the same score of the target video."""
    if result is None or target is None:
        return None
    return {"result": round(result, 4), "target": round(target, 4), "excess": round(result - target, 4),
            "ratio": round(result / target, 3) if target > 1e-9 else None}
