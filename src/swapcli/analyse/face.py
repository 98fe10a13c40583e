"""The face record every stage passes along, and the 106-point layout."""

from __future__ import annotations

from dataclasses import dataclass, field

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
