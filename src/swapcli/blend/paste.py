"""Paste a swapped face back into the frame, inside its ROI only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from swapcli.analyse.face import Face
from swapcli.blend.ghost_mask import (
    MaskParams,
    crop_scale,
    ghost_mask,
    outline_offset,
    params_for,
)
from swapcli.core.geometry import apply, invert
from swapcli.swap.base import SwapResult


@dataclass
class BlendInfo:
    offset: float
    params: MaskParams

    def to_json(self) -> dict:
        return {"offset": round(self.offset, 2), **self.params.to_json()}


def _probe(result: SwapResult, target: Face) -> tuple[np.ndarray, Face, np.ndarray]:
    """Where to look for the generated face: the engine's aligned crop when there is one (no warp,
    and it exists on the host even when paste-back runs on the GPU), else the ROI image.
    Returns (image, face box there, 2x3 map from there to ROI pixels)."""
    x0, y0 = result.roi[:2]
    if result.crop is not None and result.matrix is not None:
        crop = result.crop
        if not isinstance(crop, np.ndarray):
            crop = crop.float().cpu().numpy()
        box = apply(result.matrix, np.array([[target.bbox[0], target.bbox[1]], [target.bbox[2], target.bbox[1]],
                                             [target.bbox[2], target.bbox[3]], [target.bbox[0], target.bbox[3]]]))
        face = Face(bbox=np.concatenate([box.min(0), box.max(0)]).astype(np.float32), score=target.score,
                    kps=apply(result.matrix, target.kps).astype(np.float32))
        back = invert(result.matrix)
        back[:, 2] -= (x0, y0)
        image = crop
    else:
        shift = np.array([x0, y0], dtype=np.float32)
        face = Face(bbox=target.bbox - np.tile(shift, 2), score=target.score, kps=target.kps - shift)
        back = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        image = result.image
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), face, back


def generated_landmarks(results: Sequence[SwapResult], targets: Sequence[Face], analyser) -> list[np.ndarray]:
    """106 points of each swapped face in ROI pixels (from the engine, else detected on it, all in
    one landmark-model call)."""
    out: list[np.ndarray | None] = [r.landmarks for r in results]
    todo = [i for i, pts in enumerate(out) if pts is None]
    probes = [_probe(results[i], targets[i]) for i in todo]
    found = analyser.landmarks_many([(image, face) for image, face, _ in probes])
    for i, (_, _, back), pts in zip(todo, probes, found):
        out[i] = apply(back, pts).astype(np.float32)
    return out  # type: ignore[return-value]


def blend(
    frame: np.ndarray,
    target: Face,
    result: SwapResult,
    generated: np.ndarray,
    params: Callable[[float], MaskParams] | None = None,
    occluded: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    ghost: bool = True,
) -> BlendInfo:
    """Alpha-blend result into frame (in place) with the GHOST mask.

    `params` maps this face's outline offset to mask parameters; video tracks
    pass one that smooths the offset over time. Default: GHOST's rule as is.
    `occluded` (ROI-sized, 1 = something covers the target's face) keeps the target in front;
    `visible` (ROI-sized, the other --mask types, 1 = may paste) bounds the paste too; with
    `ghost` False the GHOST mask is left out (its offset is still measured and reported).
    """
    x0, y0, x1, y1 = result.roi
    shift = np.array([x0, y0], dtype=np.float64)
    scale = crop_scale(target.kps)
    offset = outline_offset(generated, target.landmarks - shift, scale)
    chosen = (params or params_for)(offset)
    if ghost:
        mask = ghost_mask(generated, chosen, (y1 - y0, x1 - x0), scale)
    else:
        mask = np.ones((y1 - y0, x1 - x0), np.float32)
    if result.keep is not None:
        mask *= 1.0 - result.keep
    if occluded is not None:
        mask *= 1.0 - occluded
    if visible is not None:
        mask *= visible
    region = frame[y0:y1, x0:x1]
    m = mask[..., None]
    out = result.image * m + region.astype(np.float32) * (1.0 - m)
    region[...] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return BlendInfo(offset, chosen)
