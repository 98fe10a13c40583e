"""The swap-engine interface: one small protocol every engine implements.

An engine renders the source identity over one target face inside a region
of interest (ROI) of the frame. Blending and paste-back are shared and live in
swapcli.blend, so every engine gets the same mask and the same seams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from swapcli.analyse.face import Face


@dataclass
class SourceFace:
    """One source photo's chosen face, analysed once and reused for every target."""

    image: np.ndarray  # BGR uint8
    face: Face  # with landmarks and embedding
    path: Path | None = None
    cache: dict = field(default_factory=dict)  # engine-private derived data (mirrors, crops)


@dataclass
class SwapResult:
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels
    image: np.ndarray | None  # float32 BGR, ROI-sized: the swapped face (outside: anything); None when pasted on the device
    keep: np.ndarray | None = None  # float32 ROI-sized, 1 where the target must show (open mouth)
    landmarks: np.ndarray | None = None  # 106 points of the generated face, ROI pixels, if known
    info: dict = field(default_factory=dict)
    # Crop engines also hand over their aligned output, so paste-back can run on the model's
    # device (blend/torch_paste.py) and generated landmarks are found on the crop itself.
    crop: object | None = None  # (S, S, 3) float32 BGR 0..255: numpy, or a torch tensor on the device
    matrix: np.ndarray | None = None  # 2x3 frame -> crop


# One face to swap: the frame it is in (untouched), the face, and the source group for it.
SwapItem = tuple[np.ndarray, Face, Sequence[SourceFace]]


class SwapEngine(Protocol):
    name: str
    uses_embedding: bool  # True: sources are combined as identities, not as photos

    def swap(self, frame: np.ndarray, target: Face, sources: Sequence[SourceFace]) -> SwapResult:
        ...


def swap_batch(engine, items: Sequence[SwapItem]) -> list[SwapResult]:
    """Faces of many frames in as few model calls as the engine allows (crop engines batch them)."""
    if hasattr(engine, "swap_batch"):
        return engine.swap_batch(items)
    return [engine.swap(frame, face, sources) for frame, face, sources in items]
