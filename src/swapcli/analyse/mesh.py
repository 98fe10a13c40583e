"""A generic 3D face mesh over the 106 landmarks: head pose, texture layout and face regions.

Every face (source or target) is the same mesh placed by its landmarks, so a point of one face
corresponds to a point of another through the mesh's texture layout ("UV"). The 3D shape gives
each face its head pose, which triangles face the camera (a turned source fills its hidden half
from its mirror image) and which triangles are in front (a turned target's nose covers its far
cheek). Regions (eye openings, inner mouth, lips, brows, forehead) are sets of triangles, so
"keep the target's eyes" is a lookup, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from swapcli.analyse.face import MIRROR_106
from swapcli.analyse.face_model_data import FACE_106_3D

# Landmark groups (insightface 2d106det; image-left = "left").
CONTOUR_PATH = np.array([1, *range(9, 17), *range(2, 9), 0, *range(24, 17, -1), *range(32, 24, -1), 17])
LEFT_EYE_RING = np.array([35, 41, 40, 42, 39, 37, 33, 36])  # outer corner, upper lid, inner corner, lower lid
RIGHT_EYE_RING = MIRROR_106[LEFT_EYE_RING]
PUPILS = np.array([34, 88])  # 38 and 92 repeat 34 and 88
INNER_LIP_RING = np.array([52, 65, 66, 62, 70, 69, 61, 57, 60, 54])
OUTER_LIP_RING = np.array([52, 64, 63, 71, 67, 68, 61, 58, 59, 53, 56, 55])
LEFT_BROW_UPPER = np.array([48, 49, 51, 50])  # outer to inner
LEFT_BROW_LOWER = np.array([43, 44, 45, 47, 46])
LEFT_BROW = np.r_[LEFT_BROW_LOWER, LEFT_BROW_UPPER]
RIGHT_BROW = MIRROR_106[LEFT_BROW]
RIGHT_BROW_UPPER = MIRROR_106[LEFT_BROW_UPPER]
NOSE = np.arange(72, 87)
# Points that keep their place on the skull whatever the expression: used for the head pose.
RIGID = np.r_[LEFT_EYE_RING[[0, 4]], RIGHT_EYE_RING[[0, 4]], NOSE, LEFT_BROW_LOWER, MIRROR_106[LEFT_BROW_LOWER]]

FOREHEAD_ROWS = (0.25, 0.8)  # heights above the upper brow edge, in eye distances
RING_OUT = 0.25  # outer ring: contour pushed out by this, in eye distances

# Region codes of triangles. LIDS and NOSTRILS are skin with dark features of their own (lashes,
# nostrils), so colour tests of skin leave them out.
SKIN, EYE, MOUTH_IN, LIPS, BROW, FOREHEAD, OUTER, LIDS, NOSTRILS = range(9)
LOWER_NOSE = np.array([76, 77, 78, 79, 80, 82, 83, 84, 85, 86])


@dataclass(frozen=True)
class Extra:
    """A mesh vertex that is not a landmark: a mean of landmarks plus a fixed 3D offset."""

    parents: tuple[int, ...]
    offset: tuple[float, float, float]


def _extras() -> list[Extra]:
    out: list[Extra] = []
    upper_l = list(LEFT_BROW_UPPER)
    upper_r = [int(MIRROR_106[i]) for i in upper_l]
    for k, h in enumerate(FOREHEAD_ROWS):
        back = 0.08 * (k + 1)
        for i in upper_l + upper_r:
            out.append(Extra((int(i),), (0.0, -h, back)))
        out.append(Extra((50, int(MIRROR_106[50])), (0.0, -h - 0.05, back)))
    centre = np.array([0.0, 0.45])
    for i in CONTOUR_PATH:
        d = FACE_106_3D[i, :2] - centre
        d = d / np.linalg.norm(d) * RING_OUT
        out.append(Extra((int(i),), (float(d[0]), float(d[1]), 0.15)))
    return out


EXTRAS = _extras()
N_VERTS = 106 + len(EXTRAS)
FOREHEAD_VERTS = np.arange(106, 106 + 2 * (2 * len(LEFT_BROW_UPPER) + 1))
FOREHEAD_ROW1 = FOREHEAD_VERTS[: len(FOREHEAD_VERTS) // 2]
RING_VERTS = np.arange(FOREHEAD_VERTS[-1] + 1, N_VERTS)
UNUSED = np.array([38, 92])


def _mirror_vertices() -> np.ndarray:
    """Index of each mesh vertex's mirror image."""
    m = np.arange(N_VERTS)
    m[:106] = MIRROR_106
    per_row = 2 * len(LEFT_BROW_UPPER) + 1
    half = len(LEFT_BROW_UPPER)
    for r in range(len(FOREHEAD_ROWS)):
        base = 106 + r * per_row
        for k in range(half):
            m[base + k], m[base + half + k] = base + half + k, base + k
    pos = {int(v): j for j, v in enumerate(CONTOUR_PATH)}
    for j, v in enumerate(CONTOUR_PATH):
        m[RING_VERTS[j]] = RING_VERTS[pos[int(MIRROR_106[v])]]
    return m


MIRROR_VERTS = _mirror_vertices()


def template_vertices() -> np.ndarray:
    """(N_VERTS, 3) the generic face with its extra vertices, in eye distances."""
    base = FACE_106_3D.astype(np.float64)
    extra = np.array([base[list(e.parents)].mean(0) + e.offset for e in EXTRAS])
    return np.vstack([base, extra])


TEMPLATE = template_vertices()


def _layout() -> np.ndarray:
    """2D texture layout: the template seen from the front, with eyes and mouth opened so each
    opening is a region of its own (how wide it is in a photo does not matter here)."""
    uv = TEMPLATE[:, :2].copy()
    for ring in (np.r_[LEFT_EYE_RING, PUPILS[:1]], np.r_[RIGHT_EYE_RING, PUPILS[1:]]):
        c = uv[ring].mean(0)
        uv[ring, 1] = c[1] + (uv[ring, 1] - c[1]) * 1.3
    uv[[65, 66, 62, 70, 69], 1] -= 0.03
    uv[[54, 60, 57], 1] += 0.04
    return uv


UV = _layout()


def _cross(p1, p2, p3, p4) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return orient(p1, p2, p3) * orient(p1, p2, p4) < 0 and orient(p3, p4, p1) * orient(p3, p4, p2) < 0


def _ring_edges(ring) -> list[tuple[int, int]]:
    return [(int(ring[i]), int(ring[(i + 1) % len(ring)])) for i in range(len(ring))]


def _enforce_edges(tris: list[list[int]], pts: np.ndarray, edges) -> list[list[int]]:
    """Flip Delaunay edges until every ring edge is a mesh edge (the few missing ones cross one
    edge each), so no triangle spans the lip line or an eyelid."""
    for a, b in edges:
        for _ in range(50):
            owners: dict[tuple[int, int], list[int]] = {}
            for k, t in enumerate(tris):
                for u, v in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
                    owners.setdefault((min(u, v), max(u, v)), []).append(k)
            if (min(a, b), max(a, b)) in owners:
                break
            for (u, v), ks in owners.items():
                if len(ks) != 2 or a in (u, v) or b in (u, v) or not _cross(pts[a], pts[b], pts[u], pts[v]):
                    continue
                w1 = next(x for x in tris[ks[0]] if x not in (u, v))
                w2 = next(x for x in tris[ks[1]] if x not in (u, v))
                if _cross(pts[w1], pts[w2], pts[u], pts[v]):
                    tris[ks[0]], tris[ks[1]] = [w1, w2, u], [w1, w2, v]
                    break
            else:
                raise RuntimeError(f"mesh: cannot make {a}-{b} an edge")
    return tris


@lru_cache(maxsize=1)
def triangles() -> np.ndarray:
    """(T, 3) vertex indices, counter-clockwise in the layout (image y down): `triangulate()`,
    stored in analyse/mesh_triangles.py."""
    from swapcli.analyse.mesh_triangles import TRIANGLES

    tris = np.array(TRIANGLES, dtype=np.int64)
    tris.setflags(write=False)
    return tris


def triangulate() -> np.ndarray:
    """The layout's Delaunay triangulation with the eye and lip rings as edges (what
    mesh_triangles.py stores)."""
    from scipy.spatial import Delaunay

    used = np.setdiff1d(np.arange(N_VERTS), UNUSED)
    tris = used[Delaunay(UV[used]).simplices].tolist()
    rings = (INNER_LIP_RING, OUTER_LIP_RING, LEFT_EYE_RING, RIGHT_EYE_RING)
    tris = np.array(_enforce_edges(tris, UV, [e for r in rings for e in _ring_edges(r)]))
    a, b, c = UV[tris[:, 0]], UV[tris[:, 1]], UV[tris[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tris[area < 0] = tris[area < 0][:, [0, 2, 1]]
    tris.setflags(write=False)
    return tris


@lru_cache(maxsize=1)
def regions() -> np.ndarray:
    """Region code of each triangle."""
    tris = triangles()
    sets = {
        EYE: set(LEFT_EYE_RING) | set(RIGHT_EYE_RING) | set(PUPILS),
        MOUTH_IN: set(INNER_LIP_RING),
        LIPS: set(INNER_LIP_RING) | set(OUTER_LIP_RING),
        BROW: set(LEFT_BROW) | set(RIGHT_BROW),
    }
    out = np.full(len(tris), SKIN, dtype=np.int8)
    for k, t in enumerate(tris):
        vs = set(int(v) for v in t)
        if vs & set(RING_VERTS.tolist()):
            out[k] = OUTER
        elif vs & set(FOREHEAD_VERTS.tolist()):
            out[k] = FOREHEAD
        elif vs <= sets[MOUTH_IN]:
            out[k] = MOUTH_IN
        elif vs <= sets[LIPS]:
            out[k] = LIPS
        elif vs <= sets[EYE]:
            out[k] = EYE
        elif vs <= sets[BROW]:
            out[k] = BROW
        elif len(vs & sets[EYE]) >= 2:
            out[k] = LIDS
        elif vs <= set(LOWER_NOSE.tolist()):
            out[k] = NOSTRILS
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def vertex_normals() -> np.ndarray:
    """(N_VERTS, 3) unit outward normals of the template (pointing at the camera is -z)."""
    tris = triangles()
    v = TEMPLATE
    n = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    out = np.zeros_like(v)
    for j in range(3):
        np.add.at(out, tris[:, j], n)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
    if out[:106, 2].mean() > 0:  # orientation of the layout decides the cross product's sign
        out = -out
    return out


@dataclass(frozen=True)
class HeadPose:
    """Scaled orthographic camera: image = scale * rot[:2] @ X + shift."""

    scale: float
    rot: np.ndarray  # (3, 3) rotation, rows: image x, image y, depth (away from the camera)
    shift: np.ndarray  # (2,)

    @property
    def yaw(self) -> float:
        """Degrees; positive when the face turns towards the image right."""
        forward = self.rot @ np.array([0.0, 0.0, -1.0])  # the face's own "towards the viewer"
        return float(np.degrees(np.arctan2(forward[0], -forward[2])))

    @property
    def pitch(self) -> float:
        forward = self.rot @ np.array([0.0, 0.0, -1.0])
        return float(np.degrees(np.arctan2(-forward[1], -forward[2])))

    @property
    def roll(self) -> float:
        return float(np.degrees(np.arctan2(self.rot[1, 0], self.rot[0, 0])))

    def project(self, points3d: np.ndarray) -> np.ndarray:
        return self.scale * points3d @ self.rot[:2].T + self.shift

    def depth(self, points3d: np.ndarray) -> np.ndarray:
        return points3d @ self.rot[2]

    def visibility(self) -> np.ndarray:
        """(N_VERTS,) how squarely each vertex faces the camera: 1 frontal, <= 0 hidden."""
        return -(vertex_normals() @ self.rot[2])

    def to_json(self) -> dict:
        return {"yaw": round(self.yaw, 1), "pitch": round(self.pitch, 1), "roll": round(self.roll, 1)}


def fit_pose(landmarks: np.ndarray) -> HeadPose:
    """Least-squares scaled-orthographic fit of the template's rigid points to 106 landmarks."""
    x = TEMPLATE[RIGID]
    p = np.asarray(landmarks, dtype=np.float64)[RIGID]
    xc, pc = x - x.mean(0), p - p.mean(0)
    a = np.linalg.lstsq(xc, pc, rcond=None)[0].T  # (2, 3): pc ~ a @ xc
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    r2 = u @ vt  # nearest pair of orthonormal rows
    rot = np.vstack([r2, np.cross(r2[0], r2[1])])
    scale = float(s.mean())
    shift = p.mean(0) - scale * x.mean(0) @ r2.T
    return HeadPose(scale, rot, shift)


def _extra_tables() -> tuple[np.ndarray, np.ndarray]:
    parents = np.zeros((len(EXTRAS), 106))
    for k, e in enumerate(EXTRAS):
        parents[k, list(e.parents)] = 1.0 / len(e.parents)
    return parents, np.array([e.offset for e in EXTRAS])


_PARENTS, _OFFSETS = _extra_tables()


def place(landmarks: np.ndarray, pose: HeadPose) -> np.ndarray:
    """(N_VERTS, 2) image positions of every mesh vertex for a face with these landmarks."""
    lmk = np.asarray(landmarks, dtype=np.float64)
    return np.vstack([lmk, _PARENTS @ lmk + pose.scale * (_OFFSETS @ pose.rot[:2].T)])


def frontal(landmarks: np.ndarray, pose: HeadPose) -> np.ndarray:
    """(106, 2) landmarks brought to the frontal view in template units (depth from the template)."""
    p = (np.asarray(landmarks, dtype=np.float64) - pose.shift) / pose.scale
    r = pose.rot
    rhs = p - np.outer(FACE_106_3D[:, 2], r[:2, 2])
    return rhs @ np.linalg.inv(r[:2, :2]).T


def to_image_delta(delta: np.ndarray, pose: HeadPose) -> np.ndarray:
    """Frontal-plane displacements (template units) as image displacements under this pose."""
    return pose.scale * np.asarray(delta, dtype=np.float64) @ pose.rot[:2, :2].T
