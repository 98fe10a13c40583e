"""Make a transplanted face look like it was photographed with the target: light, colour, grain.

Light is a slowly varying multiplier on lightness, so the source's lightness is divided by its own
local skin lightness and multiplied by the target's (both measured on skin only, never on brows,
eyes or lips, so no feature of either face is imprinted on the other). Colour is moved the same
way, and the source's colour variation is scaled to the target's: a greyscale or sepia target has
none, so the result has none. Finally sharpness and noise grain are matched, so the face is
neither waxy on a sharp photo nor crisp on a soft one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from swapcli.core.geometry import soft_mean


def _weighted_std(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-channel standard deviation of (h, w, C) values weighted by (h, w)."""
    flat_w = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    flat_x = np.ascontiguousarray(x, dtype=np.float32).reshape(flat_w.size, -1)
    sw = float(flat_w.sum()) + 1e-6
    mean = (flat_w @ flat_x) / sw
    dev = flat_x - mean
    return np.sqrt((flat_w @ (dev * dev)) / sw)


@dataclass
class ColourFields:
    """A smooth per-pixel affine map of CIELAB taking the source's colour and light to the
    target's: L' = L * gain + lift, ab' = ab * k + shift, kept as one multiplier and one offset
    image (h, w, 3). Smooth, so it is measured on a coarse grid and applied at full resolution."""

    scale: np.ndarray  # (h, w, 3): gain, k_a, k_b
    offset: np.ndarray  # (h, w, 3): lift, shift_a, shift_b

    def resized(self, size: tuple[int, int]) -> "ColourFields":
        if self.scale.shape[1::-1] == tuple(size):
            return self
        up = cv2.resize(np.dstack([self.scale, self.offset]), size, interpolation=cv2.INTER_LINEAR)
        return ColourFields(up[..., :3], up[..., 3:])

    def apply(self, lab: np.ndarray) -> np.ndarray:
        """In place on `lab` (float32 CIELAB), which is returned."""
        np.multiply(lab, self.scale, out=lab)
        np.add(lab, self.offset, out=lab)
        return lab


def colour_fields(source_lab: np.ndarray, target_lab: np.ndarray, source_skin: np.ndarray,
                  target_skin: np.ndarray, sigma: float) -> ColourFields | None:
    """How to recolour and relight the source (CIELAB, region-sized) like the target.

    Both show the same face geometry (the target warped onto the same mesh), and the skin weights
    say where each may be measured. None when there is too little skin to measure.
    """
    ls, lt = source_lab, target_lab
    ws = source_skin.astype(np.float32)
    wt = target_skin.astype(np.float32)
    if np.minimum(ws, wt).sum() < 20:
        return None
    ms = soft_mean(ls, ws, sigma, prior_weight=0.05)
    mt = soft_mean(lt, wt, sigma, prior_weight=0.05)
    # Lighter skin than the source's scales its detail up: by the square root of the light ratio
    # only, so a dark source's noise and stubble are not amplified into blotches.
    gain = np.sqrt(np.clip(mt[..., 0] / np.maximum(ms[..., 0], 5.0), 0.4, 2.5)).astype(np.float32)
    # Colour variation of the source, scaled to the target's (0 in a greyscale photo).
    ss = _weighted_std(ls[..., 1:] - ms[..., 1:], ws)
    st = _weighted_std(lt[..., 1:] - mt[..., 1:], wt)
    k = np.clip(st / np.maximum(ss, 1e-3), 0.0, 1.0).astype(np.float32)
    scale = np.empty(ms.shape, np.float32)
    scale[..., 0] = gain
    scale[..., 1:] = k
    return ColourFields(scale, (mt - ms * scale).astype(np.float32))


def _fine_noise(lightness: np.ndarray, weight: np.ndarray) -> float:
    """Robust amplitude of the finest detail (grain and pores) where weight is high."""
    detail = lightness - cv2.GaussianBlur(lightness, (0, 0), 1.0)
    sel = detail[weight > 0.5][::3]
    if sel.size < 50:
        return 0.0
    return float(1.4826 * np.median(np.abs(sel - np.median(sel))))


_WHITE_TO_FINE = None


def _white_to_fine() -> float:
    """How much of unit white noise survives the fine-detail measure (a constant, measured once)."""
    global _WHITE_TO_FINE
    if _WHITE_TO_FINE is None:
        noise = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
        _WHITE_TO_FINE = _fine_noise(noise, np.ones_like(noise))
    return _WHITE_TO_FINE


def match_grain(
    rendered_bgr: np.ndarray,
    target_bgr: np.ndarray,
    rendered_skin: np.ndarray,
    target_skin: np.ndarray,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Blur a too-crisp face, or add the target's grain to a too-smooth one.

    Measured on skin only, on luma (grey levels); grain is added equally to B, G and R (a
    greyscale photo stays grey). The noise comes from `seed`, so a run is repeatable.
    """
    lr = cv2.cvtColor(rendered_bgr, cv2.COLOR_BGR2GRAY)
    lt = cv2.cvtColor(target_bgr, cv2.COLOR_BGR2GRAY)
    nr = _fine_noise(lr, rendered_skin)
    nt = _fine_noise(lt, target_skin)
    info = {"grain_target": round(nt, 2), "grain_face": round(nr, 2)}
    out = rendered_bgr
    if nr > 1.35 * nt + 0.3:
        for sigma in (0.5, 0.7, 1.0, 1.4, 2.0):
            if _fine_noise(cv2.GaussianBlur(lr, (0, 0), sigma), rendered_skin) <= 1.15 * nt + 0.2:
                break
        out = cv2.GaussianBlur(rendered_bgr, (0, 0), sigma)
        info["blur"] = sigma
    elif nt > 1.2 * nr + 0.2:
        add = np.sqrt(max(nt * nt - nr * nr, 0.0)) / _white_to_fine()
        noise = np.random.default_rng(seed).standard_normal(rendered_bgr.shape[:2]).astype(np.float32)
        out = rendered_bgr + (noise * add)[..., None]
        info["grain_added"] = round(add, 2)
    return np.clip(out, 0.0, 255.0), info
