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
    image: np.ndarray  # float32 BGR, ROI-sized: the swapped face (outside the face: anything)
    keep: np.ndarray | None = None  # float32 ROI-sized, 1 where the target must show (open mouth)
    landmarks: np.ndarray | None = None  # 106 points of the generated face, ROI pixels, if known
    info: dict = field(default_factory=dict)


class SwapEngine(Protocol):
    name: str
    uses_embedding: bool  # True: sources are combined as identities, not as photos

    def swap(self, frame: np.ndarray, target: Face, sources: Sequence[SourceFace]) -> SwapResult:
        ...
