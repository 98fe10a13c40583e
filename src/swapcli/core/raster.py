"""Triangles to pixels: which mesh triangle covers each pixel of a region, and where in it.

A mesh placed on a face is rasterised once; every per-pixel quantity the engine needs (where to
sample the source, its mirror image or the target; visibility; regions) is then a barycentric mix
of per-vertex values, so all of them agree exactly and no image is resampled twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUBPIXEL = 4  # cv2 fixed-point bits for triangle corners


@dataclass
class Raster:
    index: np.ndarray  # (h, w) int32 triangle index, -1 where no triangle
    bary: np.ndarray  # (3, h, w) float32 barycentric weights of the triangle's corners
    corners: np.ndarray  # (3, h, w) int32 vertex indices of the triangle's corners

    @property
    def covered(self) -> np.ndarray:
        return self.index >= 0

    def gather(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex values (V,) or (V, K) interpolated at every pixel: (h, w) or (h, w, K).
        Corner by corner (planes of one corner each): several times faster than one einsum over
        (h, w, 3, K), and np.take than fancy indexing."""
        values = np.asarray(values, dtype=np.float32)
        out = None
        for c in range(3):
            v = np.take(values, self.corners[c], axis=0)
            v *= self.bary[c] if values.ndim == 1 else self.bary[c][..., None]
            out = v if out is None else np.add(out, v, out=out)
        return out

    def per_triangle(self, values: np.ndarray, fill=0) -> np.ndarray:
        """A per-triangle value at every pixel (fill where no triangle)."""
        values = np.asarray(values)
        out = np.where(self.covered, np.take(values, np.maximum(self.index, 0), axis=0), fill)
        return out.astype(values.dtype)


def rasterise(verts: np.ndarray, tris: np.ndarray, shape: tuple[int, int], depth: np.ndarray | None = None) -> Raster:
    """Rasterise triangles given by 2D vertices (pixels of the region) into an (h, w) region.

    `depth` (per vertex, larger = farther) paints far triangles first, so where a turned face
    folds over itself the nearer surface wins. Degenerate triangles (a closed mouth's inside)
    cover nothing.
    """
    h, w = shape
    verts = np.asarray(verts, dtype=np.float64)
    corner = verts[tris]  # (T, 3, 2)
    a, b, c = corner[:, 0], corner[:, 1], corner[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    order = np.arange(len(tris))
    if depth is not None:
        order = np.argsort(-np.asarray(depth, dtype=np.float64)[tris].mean(1), kind="stable")
    index = np.full((h, w), -1, dtype=np.int32)
    fixed = np.round(corner * (1 << SUBPIXEL)).astype(np.int32)
    for k in order:
        if abs(area[k]) < 1e-3:
            continue
        cv2.fillConvexPoly(index, fixed[k], int(k), lineType=cv2.LINE_8, shift=SUBPIXEL)
    # Barycentric weights: [x, y, 1] = M @ bary with M's columns the corners (homogeneous);
    # M's inverse in closed form (rows: each corner's weight as a plane over x, y).
    ok = np.abs(area) >= 1e-3
    d = np.where(ok, area, 1.0)[:, None]
    ax, ay, bx, by, cx, cy = (corner[:, i, j][:, None] for i in range(3) for j in range(2))
    inv = np.stack([np.hstack([by - cy, cx - bx, bx * cy - cx * by]),
                    np.hstack([cy - ay, ax - cx, cx * ay - ax * cy]),
                    np.hstack([ay - by, bx - ax, ax * by - bx * ay])], axis=1) / d[:, :, None]
    inv[~ok] = 0.0
    k = np.maximum(index, 0)
    # Each corner's weight is a plane a*x + b*y + c over the pixel grid, per triangle.
    planes = np.take(inv.astype(np.float32).reshape(len(tris), 9), k, axis=0)  # (h, w, 9)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    outside = index < 0
    bary = np.empty((3, h, w), np.float32)
    for j in range(3):
        bary[j] = planes[..., 3 * j] * xs + planes[..., 3 * j + 1] * ys + planes[..., 3 * j + 2]
        bary[j][outside] = 0.0
    corners = np.take(np.asarray(tris, dtype=np.int32).T, k, axis=1)  # (3, h, w)
    return Raster(index=index, bary=bary, corners=corners)
