"""Head pose from the five detection points.

A generic 3D face (eye centres, nose tip, mouth corners) is fitted with
solvePnP; five points cannot give an exact pose, but the estimate is
consistent, which is what comparing a result with its target needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Generic face in millimetres, x to the image right, y down, z away from camera.
_MODEL_3D = np.array(
    [
        [-32.0, -33.0, 27.0],  # left eye (image left)
        [32.0, -33.0, 27.0],  # right eye
        [0.0, 0.0, 0.0],  # nose tip
        [-26.0, 30.0, 22.0],  # left mouth corner
        [26.0, 30.0, 22.0],  # right mouth corner
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float
    roll: float

    def to_json(self) -> dict:
        return {"yaw": round(self.yaw, 2), "pitch": round(self.pitch, 2), "roll": round(self.roll, 2)}


def roll_degrees(kps: np.ndarray) -> float:
    dx, dy = kps[1] - kps[0]
    return float(np.degrees(np.arctan2(dy, dx)))


def yaw_sign(kps: np.ndarray) -> float:
    """Signed horizontal nose offset from the eye/mouth midline, in eye distances.

    Positive when the nose lies towards the image right (head turned to the
    image right). Cheap and roll-invariant; used to decide mirroring.
    """
    kps = np.asarray(kps, dtype=np.float64)
    axis = kps[1] - kps[0]
    dist = np.linalg.norm(axis) + 1e-9
    ux = axis / dist
    mid = (kps[0] + kps[1] + kps[3] + kps[4]) / 4
    return float(np.dot(kps[2] - mid, ux) / dist)


def head_pose(kps: np.ndarray) -> Pose:
    kps = np.asarray(kps, dtype=np.float64)
    span = float(np.ptp(kps, axis=0).max())
    focal = span * 6.0  # a moderate field of view around the face
    centre = kps.mean(axis=0)
    camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(_MODEL_3D, kps, camera, None, flags=cv2.SOLVEPNP_EPNP)
    if ok:  # EPnP alone is biased on five points; refine by least squares
        ok, rvec, tvec = cv2.solvePnP(_MODEL_3D, kps, camera, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return Pose(0.0, 0.0, roll_degrees(kps))
    rot, _ = cv2.Rodrigues(rvec)
    sy = np.hypot(rot[0, 0], rot[1, 0])
    pitch = np.degrees(np.arctan2(rot[2, 1], rot[2, 2]))
    yaw = np.degrees(np.arctan2(-rot[2, 0], sy))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    pitch = (pitch + 180.0) % 360.0 - 180.0
    if pitch > 90:
        pitch -= 180
    elif pitch < -90:
        pitch += 180
    return Pose(float(yaw), float(pitch), float(roll))
