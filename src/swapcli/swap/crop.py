"""What every neural generator shares: align a crop, generate, warp it back.

A generator sees only its aligned crop; the result is warped back into a
region of interest (ROI) around the face and handed to the shared GHOST-mask
blend, so every engine gets the same seams. Pixels outside the crop's
footprint were never generated: `keep` hides them from the mask.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from swapcli.analyse.face import Face
from swapcli.core.geometry import apply, invert
from swapcli.core.templates import align_matrix, warp_crop
from swapcli.swap.base import SourceFace, SwapItem, SwapResult
from swapcli.swap.identity import combine

log = logging.getLogger("swapcli")

FOOTPRINT_EDGE = 0.03  # feather the crop footprint over this share of the crop side

NORMS = ("unit", "tanh", "imagenet")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_tensor(crops_bgr: np.ndarray, norm: str) -> np.ndarray:
    """(B, H, W, 3) BGR uint8 -> (B, 3, H, W) float32 RGB in the model's range."""
    x = crops_bgr[..., ::-1].astype(np.float32) / 255.0
    if norm == "tanh":
        x = (x - 0.5) / 0.5
    elif norm == "imagenet":
        x = (x - _IMAGENET_MEAN) / _IMAGENET_STD
    elif norm != "unit":
        raise ValueError(f"unknown normalisation '{norm}'")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def from_tensor(y: np.ndarray, norm: str) -> np.ndarray:
    """(B, 3, H, W) model output -> (B, H, W, 3) float32 BGR in [0, 255]."""
    x = np.asarray(y, dtype=np.float32).transpose(0, 2, 3, 1)
    if norm == "tanh":
        x = x * 0.5 + 0.5
    elif norm == "imagenet":
        x = x * _IMAGENET_STD + _IMAGENET_MEAN
    return np.clip(x[..., ::-1] * 255.0, 0.0, 255.0)


@lru_cache(maxsize=8)
def _footprint(size: int) -> np.ndarray:
    """1 inside a size x size crop, feathered at its edge (the same for every face: computed once)."""
    edge = max(2, int(round(FOOTPRINT_EDGE * size)))
    ones = np.zeros((size, size), np.float32)
    ones[edge:-edge, edge:-edge] = 1.0
    ones = cv2.GaussianBlur(ones, (0, 0), edge / 2.0)
    ones.setflags(write=False)
    return ones


def roi_of(matrix: np.ndarray, size: int, shape: tuple[int, ...]):
    """The frame box (x0, y0, x1, y1) covered by a size x size crop, and the crop -> ROI affine."""
    inv = invert(matrix)
    corners = apply(inv, np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64))
    h, w = shape[:2]
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    inv_roi = inv.copy()
    inv_roi[:, 2] -= (x0, y0)
    return (int(x0), int(y0), int(x1), int(y1)), inv_roi


def paste_region(crop: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...]):
    """Warp a crop (float32, crop pixels) back to the frame, inside its footprint's box only.

    Returns (roi, image, footprint): footprint is 1 inside the crop, feathered at its edge.
    """
    size = crop.shape[0]
    roi, inv_roi = roi_of(matrix, size, shape)
    x0, y0, x1, y1 = roi
    out_size = (x1 - x0, y1 - y0)
    image = cv2.warpAffine(crop, inv_roi, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    footprint = cv2.warpAffine(_footprint(size), inv_roi, out_size, flags=cv2.INTER_LINEAR, borderValue=0.0)
    return roi, image, footprint


class CropEngine:
    """Base of the neural engines. Subclasses set template/size and implement
    `source_latent(raw_identity, sources)` and `generate(crops, latents)`."""

    name = "crop"
    uses_embedding = False  # the analyser's MobileFaceNet is not their identity space
    template = "arcface_128"
    size = 128
    max_batch = 32  # crops per generator call: bounds GPU memory whatever the batch of frames
    boost = 1  # pixel-boost factor k: the face is aligned at k·size (swap/pixel_boost.py)

    def __init__(self, embedder, mix: float | None = None) -> None:
        self.embedder = embedder  # has .embed(image, kps) -> raw vector; None for image-driven engines
        self.mix = mix
        self._latents: dict[tuple[int, ...], np.ndarray] = {}

    def set_pixel_boost(self, boost: int | None) -> None:
        """--pixel-boost PX: align at PX = k·size and generate k² interleaved sub-images
        (a usage error when PX is not a multiple of this generator's input side)."""
        from swapcli.swap.pixel_boost import factor

        self.boost = factor(boost, self.size, self.name)
        if self.boost > 1 and not getattr(self, "batched", True):
            log.debug("pixel boost %d: %s runs a batch of 1, so each face takes %d generator calls",
                      boost, self.name, self.boost ** 2)
        elif self.boost > 1:
            log.debug("pixel boost %d: %s generates the %d sub-images of a face in one call",
                      boost, self.name, self.boost ** 2)

    # -- identity -------------------------------------------------------
    def raw_identity(self, sources: Sequence[SourceFace]) -> np.ndarray:
        key = f"embedding:{self.name}"
        vecs = []
        for src in sources:
            if key not in src.cache:
                src.cache[key] = self.embedder.embed(src.image, src.face.kps)
            vecs.append(src.cache[key])
        return combine(vecs, self.mix)

    def latent(self, sources: Sequence[SourceFace]) -> np.ndarray:
        key = tuple(id(s) for s in sources)
        if key not in self._latents:
            self._latents[key] = self.source_latent(sources)
        return self._latents[key]

    def source_latent(self, sources: Sequence[SourceFace]) -> np.ndarray:
        raise NotImplementedError

    def generate(self, crops: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) BGR uint8 crops -> (B, S, S, 3) float32 BGR generated faces."""
        raise NotImplementedError

    def generate_boosted(self, crops: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """(B, kS, kS, 3) crops -> (B, kS, kS, 3): each face's k² sub-images in one `generate`
        call, every one with its face's latent."""
        k = self.boost
        if k == 1:
            return self.generate(crops, latents)
        from swapcli.swap.pixel_boost import merge, split

        return merge(self.generate(split(crops, k), np.repeat(latents, k * k, axis=0)), k)

    # -- the engine protocol ---------------------------------------------
    def swap(self, frame: np.ndarray, target: Face, sources: Sequence[SourceFace]) -> SwapResult:
        return self.swap_batch([(frame, target, sources)])[0]

    def swap_many(self, frame: np.ndarray, targets: Sequence[Face], sources: Sequence[SourceFace]) -> list[SwapResult]:
        return self.swap_batch([(frame, t, sources) for t in targets])

    def swap_batch(self, items: Sequence[SwapItem]) -> list[SwapResult]:
        """Faces of many frames in as few generator calls as the graph allows, each cropped from
        its own untouched frame. Results hold the generated crop; paste-back is the caller's
        (on the host with `paste_back`, or on the model's device). With pixel boost a call
        holds whole faces only (all k² sub-images of each), up to `max_batch` sub-images."""
        if not items:
            return []
        side = self.size * self.boost
        matrices = [align_matrix(face.kps, self.template, side) for _, face, _ in items]
        crops = np.stack([warp_crop(frame, m, side) for (frame, _, _), m in zip(items, matrices)])
        latents = np.stack([self.latent(sources) for _, _, sources in items])
        step = max(1, self.max_batch // self.boost ** 2)  # faces per call
        generated = np.concatenate([self.generate_boosted(crops[i:i + step], latents[i:i + step])
                                    for i in range(0, len(items), step)])
        info = {"engine": self.name, "crop": self.size, **({"pixel_boost": side} if self.boost > 1 else {})}
        return [SwapResult(roi=roi_of(matrix, side, frame.shape)[0], image=None, crop=face, matrix=matrix,
                           info=dict(info))
                for (frame, _, _), face, matrix in zip(items, generated, matrices)]


def paste_back(result: SwapResult, shape: tuple[int, ...]) -> SwapResult:
    """Fill a crop result's ROI image and keep-mask on the host (the cv2 paste path)."""
    if result.image is None:
        result.roi, result.image, footprint = paste_region(np.asarray(result.crop, np.float32), result.matrix, shape)
        result.keep = 1.0 - footprint
    return result
