"""Small geometric helpers shared by the swap and blend stages."""

from __future__ import annotations

import cv2
import numpy as np


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking src to dst, 2x3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var = (a**2).sum()
    # Umeyama in 2D with complex numbers: dst ~ z * src.
    za = a[:, 0] + 1j * a[:, 1]
    zb = b[:, 0] + 1j * b[:, 1]
    z = (np.conj(za) * zb).sum() / max(var, 1e-12)
    m = np.array([[z.real, -z.imag, 0.0], [z.imag, z.real, 0.0]])
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def scale_of(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def expand_box(points: np.ndarray, margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Integer box around points grown by margin x its larger side, clipped to the image."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    pad = margin * max(x1 - x0, y1 - y0)
    h, w = shape[:2]
    return (
        int(max(0, np.floor(x0 - pad))),
        int(max(0, np.floor(y0 - pad))),
        int(min(w, np.ceil(x1 + pad))),
        int(min(h, np.ceil(y1 + pad))),
    )


def soft_mean(image: np.ndarray, weight: np.ndarray, sigma: float, prior_weight: float = 0.0) -> np.ndarray:
    """Weighted local mean (Gaussian window) of image under weight, computed at low resolution.

    Large-sigma blurs are the costly part of colour matching; doing them on a
    4x smaller grid changes nothing visible and is ~16x cheaper.
    """
    if image.ndim == 2 or image.shape[-1] == 1:
        return soft_mean(np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=2), weight, sigma,
                         prior_weight)[..., :1]
    h, w = weight.shape[:2]
    f = max(1, int(sigma // 4))
    small_w = cv2.resize(weight, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small_i = cv2.resize(image * weight[..., None], (small_w.shape[1], small_w.shape[0]), interpolation=cv2.INTER_AREA)
    s = sigma / f
    num = cv2.GaussianBlur(small_i, (0, 0), s)
    den = cv2.GaussianBlur(small_w, (0, 0), s)
    # Where the window holds little weight, lean on the weighted mean of the whole region.
    total = float(small_w.sum())
    if total > 0:
        prior = (small_i.reshape(-1, small_i.shape[-1]).sum(0) / total).astype(np.float32)
        num = num + prior_weight * prior
        den = den + prior_weight
    mean = num / np.maximum(den, 1e-4)[..., None]
    return cv2.resize(mean, (w, h), interpolation=cv2.INTER_LINEAR)


def smooth_blur(image: np.ndarray, sigma_x: float, sigma_y: float) -> np.ndarray:
    """Gaussian blur that runs on a smaller grid when the sigmas are large.

    Used for masks, which are smooth after a wide blur, so blurring at 1/f
    size and interpolating back is visually identical and ~f^2 cheaper.
    """
    f = max(1, int(min(sigma_x, sigma_y) // 3))
    if f == 1:
        return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma_x / f, sigmaY=sigma_y / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
