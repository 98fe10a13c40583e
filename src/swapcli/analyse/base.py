"""The face-analysis interface the pipeline depends on."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from swapcli.analyse.face import Face


class FaceAnalyser(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR image, ordered left to right by box centre."""

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray:
        """106 landmarks in image pixels; also stored on the face."""

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """L2-normalised identity embedding; also stored on the face."""
