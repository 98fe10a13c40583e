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
    RIGHT_EYE,
    Face,
    cosine,
    expression_features,
    expression_gaps,
    eye_centres,
    interocular,
)
from swapcli.analyse.pose import head_pose, roll_degrees, yaw_sign

EYES = np.concatenate([LEFT_EYE, RIGHT_EYE])
EXPRESSION_FEATURES = ("mouth_open", "mouth_width", "smile", "eye_open_left", "eye_open_right")

MIN_IOU = 0.3  # a result face belongs to a target face when their boxes overlap at least this much


# --------------------------------------------------------------------------- matching


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Match:
    """The result face paired with one target face, and how it was found."""

    face: Face | None
    how: str | None  # "position", "mirrored" (a flipped result), "identity", or None (no face)
    overlap: float  # box IoU in the target's pixels (after undoing a resize or flip)


def _norm_box(face: Face, size: tuple[int, int], mirrored: bool = False) -> np.ndarray:
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in face.bbox)
    if mirrored:
        x0, x1 = w - x1, w - x0
    return np.array([x0 / w, y0 / h, x1 / w, y1 / h])


def match_faces(targets: Sequence[Face], results: Sequence[Face], target_size: tuple[int, int] | None = None,
                result_size: tuple[int, int] | None = None, identity=None) -> list[Match]:
    """For each target face, the result face that is the same face.

    First by position, in coordinates normalised by each picture's size (so a resized result
    matches): centres closer than half the face's size and sizes within a factor 1.6, greedily
    nearest first. Then, for faces still unmatched, by the mirrored position (a flipped result).
    Then, when `identity(result_face) -> score` is given (cosine to the source), the remaining result
    face that scores highest. Position comes first: a good swap changes who the face is, not where.
    """
    tsize = target_size or (1, 1)
    rsize = result_size or tsize
    out: list[Match] = [Match(None, None, 0.0)] * len(targets)
    used: set[int] = set()
    for how, mirrored in (("position", False), ("mirrored", True)):
        cands = []
        for i, t in enumerate(targets):
            if out[i].face is not None:
                continue
            tb = _norm_box(t, tsize)
            ts = max(tb[2] - tb[0], tb[3] - tb[1])
            for j, r in enumerate(results):
                if j in used:
                    continue
                rb = _norm_box(r, rsize, mirrored)
                rs = max(rb[2] - rb[0], rb[3] - rb[1])
                d = float(np.linalg.norm((tb[:2] + tb[2:]) / 2 - (rb[:2] + rb[2:]) / 2) / max(ts, 1e-9))
                ratio = rs / max(ts, 1e-9)
                if d < 0.5 and 1 / 1.6 <= ratio <= 1.6:
                    cands.append((d, i, j, iou(tb, rb)))
        for d, i, j, overlap in sorted(cands):
            if out[i].face is None and j not in used:
                out[i] = Match(results[j], how, overlap)
                used.add(j)
    if identity is not None:
        for i in range(len(targets)):
            if out[i].face is not None:
                continue
            left = [j for j in range(len(results)) if j not in used]
            if not left:
                break
            j = max(left, key=lambda k: identity(results[k]))
            out[i] = Match(results[j], "identity", 0.0)
            used.add(j)
    return out


# --------------------------------------------------------------------------- geometry of the 106 points


def expression_error(target_lmk: np.ndarray, result_lmk: np.ndarray) -> tuple[float, dict[str, float]]:
    """Mean absolute difference of the expression features (and each difference, signed result - target)."""
    t, r = expression_features(target_lmk), expression_features(result_lmk)
    diffs = {k: r[k] - t[k] for k in EXPRESSION_FEATURES}
    return float(np.mean([abs(v) for v in diffs.values()])), diffs


# What an expression is, for "whose expression does the result wear": how open the mouth is, how
# much it smiles, how open each eye is. Mouth width is left out: it is as much who someone is.
EXPRESSION_KEYS = ("mouth_open", "smile", "eye_open_left", "eye_open_right")


def expression_distance(a_lmk: np.ndarray, b_lmk: np.ndarray) -> float:
    """Distance of two expressions: RMS over EXPRESSION_KEYS of the feature differences, each in
    its EXPRESSION_SCALE (analyse.face)."""
    return float(np.sqrt(np.mean(expression_gaps(a_lmk, b_lmk, EXPRESSION_KEYS) ** 2)))


@dataclass(frozen=True)
class ExpressionFollow:
    """Whose expression the result wears: distances to the target's and to the source's."""

    to_target: float
    to_source: float
    differ: bool  # the target's and the source's expressions differ enough to tell them apart

    @property
    def follows_target(self) -> bool:
        return self.to_target < self.to_source

    def to_json(self) -> dict:
        return {"to_target": round(self.to_target, 3), "to_source": round(self.to_source, 3),
                "differ": self.differ, "follows_target": self.follows_target}


EXPRESSIONS_DIFFER = 1.0  # expression distance between target and source above which "nearer" means something


def expression_follow(target_lmk: np.ndarray, source_lmk: np.ndarray, result_lmk: np.ndarray) -> ExpressionFollow:
    return ExpressionFollow(expression_distance(result_lmk, target_lmk), expression_distance(result_lmk, source_lmk),
                            expression_distance(target_lmk, source_lmk) > EXPRESSIONS_DIFFER)


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


def face_pose(face: Face):
    """Head pose (yaw, pitch, roll in degrees): a 3D face fitted to the 106 landmarks when they are
    known (stable on every axis; the fit the engine uses, cached on the face), else PnP on the 5
    keypoints."""
    if face.landmarks is not None:
        from swapcli.analyse.skin import face_pose as fitted_pose

        return fitted_pose(face)
    return head_pose(face.kps)


def pose_error(target: Face, result: Face) -> dict[str, float]:
    """Absolute yaw, pitch and roll differences (degrees) of the two head poses and their mean,
    plus the 5-point measures: `yaw_proxy` (difference of the nose's sideways offset from the
    eye/mouth midline, in eye distances) and `roll_5pt` (difference of the eye-line angle)."""
    pt, pr = face_pose(target), face_pose(result)
    err = {"yaw": angle_diff(pt.yaw, pr.yaw), "pitch": angle_diff(pt.pitch, pr.pitch),
           "roll": angle_diff(pt.roll, pr.roll)}
    err["mean"] = float(np.mean(list(err.values())))
    err["yaw_proxy"] = abs(yaw_sign(target.kps) - yaw_sign(result.kps))
    err["roll_5pt"] = angle_diff(roll_degrees(target.kps), roll_degrees(result.kps))
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
    expression: ExpressionFollow | None = None  # with the source's landmarks
    forehead_hair: float | None = None  # with both pictures (see forehead_hair_change)
    grey_chroma: float | None = None  # when the target is greyscale (see face_chroma)

    @property
    def id_margin(self) -> float:
        return self.id_source - self.id_target

    def to_json(self) -> dict:
        extra = {"expression": self.expression.to_json() if self.expression else None,
                 "forehead_hair": None if self.forehead_hair is None else round(self.forehead_hair, 4),
                 "grey_chroma": self.grey_chroma}
        return {**extra,
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
                 gallery: Sequence[np.ndarray] | None = None, source_lmk: np.ndarray | None = None,
                 pictures: tuple[np.ndarray, np.ndarray] | None = None) -> FaceMetrics:
    """All per-face metrics; both faces need landmarks and embeddings. With the source's landmarks,
    whose expression the result wears; with (target, result) pictures of the same size and
    orientation, the forehead-hair change and, for a greyscale target, the colour in the face."""
    assert target.landmarks is not None and result.landmarks is not None
    assert target.embedding is not None and result.embedding is not None
    expr, diffs = expression_error(target.landmarks, result.landmarks)
    follow = expression_follow(target.landmarks, source_lmk, result.landmarks) if source_lmk is not None else None
    hair = chroma = None
    if pictures is not None:
        hair = forehead_hair_change(pictures[0], pictures[1], target.landmarks)
        if is_greyscale(pictures[0]):
            chroma = face_chroma(pictures[1], target.landmarks)
    return FaceMetrics(
        id_source=cosine(result.embedding, source_emb),
        id_target=cosine(result.embedding, target.embedding),
        pose_error=pose_error(target, result),
        expression_error=expr,
        expression_diff=diffs,
        eye_error=eye_error(target.landmarks, result.landmarks),
        retrieval_rank=retrieval_rank(result.embedding, source_emb, gallery) if gallery else None,
        expression=follow,
        forehead_hair=hair,
        grey_chroma=chroma,
    )


def summarise(items: Sequence[FaceMetrics], gallery_size: int | None) -> dict:
    """Means over faces (or sampled frames); retrieval as top-1 rate and mean rank."""
    if not items:
        return {}
    def mean(xs) -> float:
        return round(float(np.mean(list(xs))), 4)

    pose = {k: round(float(np.mean([m.pose_error[k] for m in items])), 2)
            for k in ("yaw", "pitch", "roll", "mean", "yaw_proxy", "roll_5pt") if k in items[0].pose_error}
    follows = [m.expression for m in items if m.expression is not None]
    differ = [f for f in follows if f.differ]
    hair = [m.forehead_hair for m in items if m.forehead_hair is not None]
    chroma = [m.grey_chroma for m in items if m.grey_chroma is not None]
    out = {
        "id_source": mean(m.id_source for m in items),
        "id_target": mean(m.id_target for m in items),
        "id_margin": mean(m.id_margin for m in items),
        "pose_error": pose,
        "expression_error": mean(m.expression_error for m in items),
        "eye_error": mean(m.eye_error for m in items),
        "expression_to_target": mean(f.to_target for f in follows) if follows else None,
        "expression_to_source": mean(f.to_source for f in follows) if follows else None,
        "expression_follows_target": mean(f.follows_target for f in differ) if differ else None,
        "expression_pairs_differing": len(differ),
        "forehead_hair": {"mean": mean(hair), "max": round(max(hair), 4)} if hair else None,
        "grey_chroma": max(chroma) if chroma else None,
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


# --------------------------------------------------------------------------- what must stay the target's

FOREHEAD_BAND = 0.3  # height of the band above the brows, in inter-ocular distances


def forehead_band(shape: tuple[int, ...], lmk: np.ndarray, height: float = FOREHEAD_BAND) -> Region | None:
    """The strip of forehead just above both brows (brow tops lifted by `height` eye distances
    along the face's upward direction): where a source's fringe would land."""
    lmk = np.asarray(lmk, dtype=np.float64)
    left, right = eye_centres(lmk)
    axis = (right - left) / (np.linalg.norm(right - left) + 1e-9)
    up = -np.array([-axis[1], axis[0]])
    from swapcli.analyse.mesh import LEFT_BROW_UPPER, RIGHT_BROW_UPPER

    tops = np.vstack([lmk[LEFT_BROW_UPPER], lmk[RIGHT_BROW_UPPER]])
    tops = tops[np.argsort(tops @ axis)]
    poly = np.vstack([tops, (tops + up * height * interocular(lmk))[::-1]])
    h, w = shape[:2]
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(poly - [x0, y0]).astype(np.int32)], 255)
    return ((x0, y0, x1, y1), mask) if mask.any() else None


def cheek_skin(image: np.ndarray, lmk: np.ndarray):
    """A skin colour model of a face from its cheeks and nose bridge (the area between the lower
    eyelids and the mouth corners, inside the outline)."""
    from swapcli.analyse.skin import fit_skin, to_lab

    lmk = np.asarray(lmk, dtype=np.float64)
    poly = lmk[[36, 33, 37, 39, 75, 76, 77, 78, 80, 84, 83, 82, 81, 89, 90, 87, 91, 61, 52]]
    region = face_region(image.shape, poly, shrink=0.0)
    if region is None:
        return None
    (x0, y0, x1, y1), mask = region
    nose = np.zeros_like(mask)
    cv2.fillConvexPoly(nose, np.round(lmk[[78, 79, 80, 85, 84]] - [x0, y0]).astype(np.int32), 255)
    sel = (mask > 0) & (nose == 0)
    return fit_skin(to_lab(image[y0:y1, x0:x1])[sel])


def forehead_hair_change(target: np.ndarray, result: np.ndarray, target_lmk: np.ndarray) -> float | None:
    """Share of the target's skin just above the brows that is no longer skin-coloured in the
    result (hair or a fringe pasted there), judged by the target's own cheek colour. None when the
    target shows no forehead skin there (its own fringe covers it)."""
    from swapcli.analyse.skin import to_lab

    model = cheek_skin(target, target_lmk)
    band = forehead_band(target.shape, target_lmk)
    if model is None or band is None:
        return None
    (x0, y0, x1, y1), mask = band
    skin_t = model.likelihood(to_lab(target[y0:y1, x0:x1])) > 0.5
    sel = (mask > 0) & skin_t
    if sel.sum() < 10:
        return None
    lost = model.likelihood(to_lab(result[y0:y1, x0:x1])) <= 0.5
    return float((lost & sel).sum() / sel.sum())


def face_chroma(image: np.ndarray, lmk: np.ndarray) -> float | None:
    """Most colour inside the face: the largest max(B, G, R) - min(B, G, R) over the face's hull,
    in 0-255 levels (0 for a pure greyscale face)."""
    region = face_region(image.shape, lmk, shrink=0.0)
    if region is None:
        return None
    (x0, y0, x1, y1), mask = region
    px = image[y0:y1, x0:x1][mask > 0].astype(np.int16)
    return float((px.max(1) - px.min(1)).max()) if len(px) else None


def is_greyscale(image: np.ndarray, tolerance: int = 2) -> bool:
    """True when the picture has no colour (every pixel's channels agree within `tolerance`)."""
    from swapcli.read.image import has_no_colour

    return has_no_colour(image, tolerance, step=2)
