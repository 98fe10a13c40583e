"""Paste a swapped face back into the frame, inside its ROI only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from swapcli.analyse.face import Face
from swapcli.blend.ghost_mask import MaskParams, crop_scale, ghost_mask, outline_offset, params_for
from swapcli.swap.base import SwapResult


@dataclass
class BlendInfo:
    offset: float
    params: MaskParams

    def to_json(self) -> dict:
        return {"offset": round(self.offset, 2), **self.params.to_json()}


def generated_landmarks(result: SwapResult, target: Face, analyser) -> np.ndarray:
    """106 points of the swapped face in ROI pixels (from the engine, else detected on it)."""
    if result.landmarks is not None:
        return result.landmarks
    x0, y0 = result.roi[:2]
    shift = np.array([x0, y0], dtype=np.float32)
    probe = Face(bbox=target.bbox - np.tile(shift, 2), score=target.score, kps=target.kps - shift)
    image = np.clip(result.image, 0, 255).astype(np.uint8)
    return analyser.landmarks(image, probe)


def blend(
    frame: np.ndarray,
    target: Face,
    result: SwapResult,
    generated: np.ndarray,
    params: Callable[[float], MaskParams] | None = None,
) -> BlendInfo:
    """Alpha-blend result into frame (in place) with the GHOST mask.

    `params` maps this face's outline offset to mask parameters; video tracks
    pass one that smooths the offset over time. Default: GHOST's rule as is.
    """
    x0, y0, x1, y1 = result.roi
    shift = np.array([x0, y0], dtype=np.float64)
    scale = crop_scale(target.kps)
    offset = outline_offset(generated, target.landmarks - shift, scale)
    chosen = (params or params_for)(offset)
    mask = ghost_mask(generated, chosen, (y1 - y0, x1 - x0), scale)
    if result.keep is not None:
        mask *= 1.0 - result.keep
    region = frame[y0:y1, x0:x1]
    m = mask[..., None]
    out = result.image * m + region.astype(np.float32) * (1.0 - m)
    region[...] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return BlendInfo(offset, chosen)
