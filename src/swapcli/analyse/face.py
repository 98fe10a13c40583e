"""The face record every stage passes along, and the 106-point layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# insightface 2d106det groups (checked by drawing the model's output on a photo).
CONTOUR = np.arange(0, 33)
LEFT_EYE = np.arange(33, 43)  # image-left eye
LEFT_BROW = np.arange(43, 52)
MOUTH = np.arange(52, 72)
NOSE = np.arange(72, 87)
RIGHT_EYE = np.arange(87, 97)
RIGHT_BROW = np.arange(97, 106)
BROWS = np.concatenate([LEFT_BROW, RIGHT_BROW])


@dataclass
class Face:
    bbox: np.ndarray  # x1, y1, x2, y2 in image pixels
    score: float
    kps: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth, right mouth
    landmarks: np.ndarray | None = None  # (106, 2)
    embedding: np.ndarray | None = None  # (512,), L2-normalised
    extra: dict = field(default_factory=dict)
    # What was worked out from this face's landmarks and the picture it was found in (its 3D pose,
    # skin model and maps): never carried over to another Face, even one made from this one (a
    # track's face moved over a missed frame is somewhere else, in another picture).
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def size(self) -> float:
        """Shorter side of the detection box, the 'face size' of the docs."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (float(self.bbox[0] + self.bbox[2]) / 2, float(self.bbox[1] + self.bbox[3]) / 2)

    def to_json(self) -> dict:
        return {
            "bbox": [round(float(v), 1) for v in self.bbox],
            "score": round(float(self.score), 4),
        }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

# Index of each point's mirror image under a horizontal flip. Found by running
# 2d106det on photos and their mirror images and solving the assignment; it is
# an involution (tests/test_landmarks.py re-checks it against the model).
MIRROR_106 = np.array(
    [0, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 1, 2, 3, 4, 5,
     6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 87, 88, 93, 91, 90, 92, 89, 94, 96, 95,
     101, 100, 99, 97, 98, 105, 104, 102, 103, 61, 53, 57, 58, 59, 54, 55, 56, 60, 52,
     62, 67, 68, 69, 70, 63, 64, 65, 66, 71, 72, 73, 74, 81, 82, 83, 84, 85, 80, 75,
     76, 77, 78, 79, 86, 33, 34, 39, 37, 36, 38, 35, 40, 42, 41, 46, 47, 45, 44, 43,
     50, 51, 49, 48]
)
MIRROR_5 = np.array([1, 0, 2, 4, 3])

# Inner lip outline, corner to corner over the upper lip and back under it.
INNER_LIPS = np.array([52, 65, 66, 62, 70, 69, 61, 57, 60, 54])
# (upper, lower) inner-lip pairs whose gap measures how far the mouth is open.
LIP_PAIRS = np.array([[66, 54], [62, 60], [70, 57]])
MOUTH_CORNERS = (52, 61)


def mouth_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap as a fraction of mouth width (0 closed, ~0.3+ clearly open)."""
    width = np.linalg.norm(landmarks[MOUTH_CORNERS[1]] - landmarks[MOUTH_CORNERS[0]]) + 1e-6
    gaps = np.linalg.norm(landmarks[LIP_PAIRS[:, 0]] - landmarks[LIP_PAIRS[:, 1]], axis=1)
    return float(gaps.mean() / width)


def mirror_face(face: Face, width: int) -> Face:
    """The same face as seen in the horizontally flipped image."""
    kps = face.kps[MIRROR_5].copy()
    kps[:, 0] = width - 1 - kps[:, 0]
    lmk = None
    if face.landmarks is not None:
        lmk = face.landmarks[MIRROR_106].copy()
        lmk[:, 0] = width - 1 - lmk[:, 0]
    x1, y1, x2, y2 = face.bbox
    bbox = np.array([width - 1 - x2, y1, width - 1 - x1, y2], dtype=np.float32)
    return Face(bbox=bbox, score=face.score, kps=kps, landmarks=lmk, embedding=face.embedding)


# --------------------------------------------------------------------------- expression measures

# 2d106det eye layout (checked on photos): two corners, two pupil points, and
# six lid points per eye; the lids are what open and close.
EYE_CORNERS = {"left": (35, 39), "right": (89, 93)}
EYE_PUPILS = frozenset({34, 38, 88, 92})
# Typical spread of each feature between people and expressions: the unit of expression distances.
EXPRESSION_SCALE = {"mouth_open": 0.12, "mouth_width": 0.12, "smile": 0.05, "eye_open_left": 0.05,
                    "eye_open_right": 0.05}


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

    mouth_open: mean inner-lip gap; mouth_width: corner to corner; smile: how far the mouth
    corners sit above the middle of the lips (across the eye line); eye_open_*: lid opening of
    each (image-left / image-right) eye.
    """
    lmk = np.asarray(lmk, dtype=np.float64)
    iod = interocular(lmk)
    gaps = np.linalg.norm(lmk[LIP_PAIRS[:, 0]] - lmk[LIP_PAIRS[:, 1]], axis=1)
    left, right = eye_centres(lmk)
    axis = (right - left) / (np.linalg.norm(right - left) + 1e-9)
    down = np.array([-axis[1], axis[0]])
    corners = (lmk[MOUTH_CORNERS[0]] + lmk[MOUTH_CORNERS[1]]) / 2
    middle = (lmk[62] + lmk[60]) / 2  # inner-lip centres, upper and lower
    return {
        "mouth_open": float(gaps.mean()) / iod,
        "mouth_width": float(np.linalg.norm(lmk[MOUTH_CORNERS[1]] - lmk[MOUTH_CORNERS[0]])) / iod,
        "smile": float((middle - corners) @ down) / iod,
        "eye_open_left": _eye_opening(lmk, LEFT_EYE, EYE_CORNERS["left"], iod),
        "eye_open_right": _eye_opening(lmk, RIGHT_EYE, EYE_CORNERS["right"], iod),
    }


def expression_gaps(a_lmk: np.ndarray, b_lmk: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """|difference| of two faces' expression features, each in its EXPRESSION_SCALE unit."""
    a, b = expression_features(a_lmk), expression_features(b_lmk)
    return np.array([abs(a[k] - b[k]) / EXPRESSION_SCALE[k] for k in keys])
