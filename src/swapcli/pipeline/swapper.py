"""Models loaded once, and the per-face work every command shares:
analyse -> swap -> blend. Image, video and batch all go through here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from swapcli.analyse.face import Face
from swapcli.analyse.insight import AnalyserOptions, InsightAnalyser
from swapcli.blend.ghost_mask import MaskParams
from swapcli.blend.paste import BlendInfo, blend, generated_landmarks
from swapcli.core.errors import NoFaceError
from swapcli.core.options import EngineOptions
from swapcli.core.timing import Clock
from swapcli.read.image import read_image
from swapcli.swap.base import SourceFace
from swapcli.swap.engines import create_engine, create_restorer


@dataclass
class FaceReport:
    face: Face
    blend: BlendInfo
    info: dict

    def to_json(self) -> dict:
        return {**self.face.to_json(), "mask": self.blend.to_json(), **self.info}


class Swapper:
    def __init__(self, options: EngineOptions | None = None, clock: Clock | None = None) -> None:
        self.options = options or EngineOptions()
        self.analyser = InsightAnalyser(
            AnalyserOptions(device=self.options.device, weights_dir=self.options.weights_dir,
                            threads=self.options.threads, det_size=self.options.det_size)
        )
        self.engine = create_engine(self.options)
        self.restorer = create_restorer(self.options)
        self.clock = clock or Clock()

    def detect(self, image: np.ndarray) -> list[Face]:
        with self.clock("detect"):
            return self.analyser.detect(image)

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray:
        with self.clock("landmarks"):
            return self.analyser.landmarks(image, face)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        with self.clock("embed"):
            return self.analyser.embed(image, face)

    def main_face(self, path: Path, what: str) -> tuple[np.ndarray, Face]:
        """The largest face of a photo (sources and references), fully analysed."""
        with self.clock("read"):
            loaded = read_image(path)
        faces = self.detect(loaded.bgr)
        if not faces:
            raise NoFaceError(f"{path}: no face found in the {what} image")
        face = max(faces, key=lambda f: f.area)
        self.landmarks(loaded.bgr, face)
        return loaded.bgr, face

    def load_sources(self, paths: Sequence[Path]) -> list[SourceFace]:
        sources = []
        for path in paths:
            image, face = self.main_face(Path(path), "source")
            if self.engine.uses_embedding:
                self.embed(image, face)
            sources.append(SourceFace(image=image, face=face, path=Path(path)))
        return sources

    def reference_embedding(self, path: Path) -> np.ndarray:
        image, face = self.main_face(Path(path), "reference")
        return self.embed(image, face)

    def swap_face(
        self,
        frame: np.ndarray,
        face: Face,
        sources: Sequence[SourceFace],
        params: Callable[[float], MaskParams] | None = None,
    ) -> FaceReport:
        """Swap one face in place; `params` maps outline offset to mask (video tracks smooth it)."""
        return self.swap_faces(frame, [face], sources, params)[0]

    def swap_faces(
        self,
        frame: np.ndarray,
        faces: Sequence[Face],
        sources: Sequence[SourceFace],
        params: Callable[[float], MaskParams] | None = None,
    ) -> list[FaceReport]:
        """Swap several faces of one frame in place. Engines that batch generate them in one
        call, all from the untouched frame; each is then restored, measured and blended."""
        for face in faces:
            if face.landmarks is None:
                self.landmarks(frame, face)
        with self.clock("swap"):
            if len(faces) > 1 and hasattr(self.engine, "swap_many"):
                results = self.engine.swap_many(frame, faces, sources)
            else:
                results = [self.engine.swap(frame, face, sources) for face in faces]
        reports = []
        for face, result in zip(faces, results):
            if self.restorer is not None:
                with self.clock("enhance"):
                    self.restorer.apply(result, face)
            generated = result.landmarks
            if generated is None:
                with self.clock("landmarks"):
                    generated = generated_landmarks(result, face, self.analyser)
            with self.clock("blend"):
                info = blend(frame, face, result, generated, params)
            reports.append(FaceReport(face, info, result.info))
        return reports
