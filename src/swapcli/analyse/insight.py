"""Face analysis with insightface's model zoo on the ONNX files located by swapcli.

Models are loaded on first use, so a run that needs no embedding never pays
for the embedder.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np

from swapcli.analyse.face import Face
from swapcli.core.errors import ModelError
from swapcli.models.locate import locate

log = logging.getLogger("swapcli")


@dataclass(frozen=True)
class AnalyserOptions:
    device: str = "auto"
    weights_dir: str | None = None
    det_size: int = 640
    det_thresh: float = 0.5
    threads: int = 0  # 0 = onnxruntime's default (all cores)


def _silence_insightface() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"onnxruntime\..*")


class InsightAnalyser:
    def __init__(self, options: AnalyserOptions | None = None) -> None:
        self.options = options or AnalyserOptions()
        self._models: dict[str, object] = {}
        self.model_paths: dict[str, str] = {}

    def _load(self, name: str):
        model = self._models.get(name)
        if model is not None:
            return model
        _silence_insightface()
        from swapcli.core.device import providers_for

        located = locate(name, self.options.weights_dir)
        providers = providers_for(self.options.device)
        try:
            import onnxruntime as ort
            from insightface.model_zoo import get_model

            sess_options = ort.SessionOptions()
            sess_options.log_severity_level = 3
            if self.options.threads:
                sess_options.intra_op_num_threads = self.options.threads
                sess_options.inter_op_num_threads = 1
            model = get_model(str(located.path), providers=providers, sess_options=sess_options)
        except Exception as exc:  # onnxruntime raises many types for a bad file
            raise ModelError(f"cannot load model {located.path}: {exc}".splitlines()[0]) from exc
        if model is None:
            raise ModelError(f"insightface did not recognise {located.path} as a {located.spec.kind}")
        if name == "scrfd_500m":
            size = self.options.det_size
            model.prepare(0, input_size=(size, size), det_thresh=self.options.det_thresh)
        else:
            model.prepare(0)
        self._models[name] = model
        self.model_paths[name] = str(located.path)
        log.debug("loaded %s from %s (%s)", name, located.path, located.origin)
        return model

    def detect(self, image: np.ndarray) -> list[Face]:
        det = self._load("scrfd_500m")
        boxes, kpss = det.detect(image, max_num=0, metric="default")
        faces = []
        for i in range(len(boxes)):
            faces.append(
                Face(
                    bbox=boxes[i, :4].astype(np.float32),
                    score=float(boxes[i, 4]),
                    kps=kpss[i].astype(np.float32),
                )
            )
        faces.sort(key=lambda f: (f.center[0], f.center[1]))
        return faces

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray:
        from insightface.app.common import Face as InsightFace

        model = self._load("2d106det")
        pts = model.get(image, InsightFace(bbox=face.bbox, kps=face.kps, det_score=face.score))
        face.landmarks = np.asarray(pts, dtype=np.float32)
        return face.landmarks

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        from insightface.app.common import Face as InsightFace

        model = self._load("w600k_mbf")
        vec = np.asarray(model.get(image, InsightFace(bbox=face.bbox, kps=face.kps)), dtype=np.float32)
        face.embedding = vec / (np.linalg.norm(vec) + 1e-12)
        return face.embedding
