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
    _bare_package()


def _bare_package() -> None:
    """Make `import insightface.model_zoo` run the model zoo's code only. The package's own
    __init__ imports its whole application stack (FaceAnalysis, liveness add-ons with
    scipy.spatial, the mask renderer): about 0.3 s at every start of swapcli, for nothing
    swapcli uses. The package entry is a plain namespace over insightface's folder instead;
    when insightface was imported in full already, that one is used."""
    import importlib.util
    import sys
    import types

    if "insightface" in sys.modules:
        return
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the import below says so
    package = types.ModuleType("insightface", "insightface's model zoo (swapcli loads it without the app stack)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__spec__ = spec
    sys.modules["insightface"] = package


class _Probe(dict):
    """What insightface's Landmark.get and ArcFaceONNX.get read and write on a face (attributes
    that are dict entries too), without importing insightface.app for its Face class."""

    def __getattr__(self, name: str):
        return self.get(name)

    def __setattr__(self, name: str, value) -> None:
        self[name] = value


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
            from insightface.model_zoo import get_model

            from swapcli.core.onnx import session_options

            model = get_model(str(located.path), providers=providers, sess_options=session_options(self.options.threads))
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

    def detect(self, image: np.ndarray, size: int | None = None) -> list[Face]:
        """Faces of an image; `size` runs the detector at another input size for this call
        (SCRFD takes any multiple of 32, so no second model is loaded)."""
        det = self._load("scrfd_500m")
        extra = {"input_size": (size, size)} if size else {}
        boxes, kpss = det.detect(_padded_to_aspect(image), max_num=0, metric="default", **extra)
        return self._faces(boxes, kpss)

    def on_gpu(self) -> bool:
        """Does the detector run on a GPU (where one batched whole-frame call beats windows)?"""
        det = self._load("scrfd_500m")
        return any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in det.session.get_providers())

    def detect_windows(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[Face]:
        """Faces inside windows of an image (boxes in image pixels), found on exactly the pixels a
        whole-image pass sees: the image is letterboxed as SCRFD does, and each window is cut from
        that at offsets on the detector's coarsest stride (32), so its anchors fall where the
        whole pass puts them. Windows are squares of a few sizes (multiples of 64), because the
        detector keeps one ONNX session per input size."""
        det = self._load("scrfd_500m")
        side = self.options.det_size
        canvas, scale = _letterbox(image, side)
        pre, kps = [], []
        for box in boxes:
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            win = min(side - side % 32, int(np.ceil(max(x1 - x0, y1 - y0) / 64.0)) * 64)
            wx = int(np.clip(round(((x0 + x1) / 2 - win / 2) / 32) * 32, 0, side - win))
            wy = int(np.clip(round(((y0 + y1) / 2 - win / 2) / 32) * 32, 0, side - win))
            scores, bboxes, kpss = det.forward(canvas[wy:wy + win, wx:wx + win], self.options.det_thresh)
            if not scores or sum(x.size for x in scores) == 0:
                continue
            shift = np.array([wx, wy], np.float32)
            pre.append(np.hstack([np.vstack(bboxes) + np.tile(shift, 2), np.vstack(scores)]))
            kps.append(np.vstack(kpss) + shift)
        if not pre:
            return []
        found, points = np.vstack(pre).astype(np.float32), np.vstack(kps)
        order = np.argsort(-found[:, 4], kind="stable")
        found, points = found[order], points[order]
        found[:, :4] /= scale
        points = points / scale
        keep = det.nms(found)
        return self._faces(found[keep], points[keep])

    def detect_many(self, images: list[np.ndarray], batched: bool | None = None) -> list[list[Face]]:
        """Faces of several frames with one detector call (the SCRFD graph has a dynamic batch).

        The letterbox, decoding and NMS are insightface's SCRFD.detect, done per image on the
        batch's outputs; tests hold the result to detect() image by image. `batched` None: only
        when the detector runs on a GPU, where per-call overhead dominates (on 2 CPU cores the
        batch measured no faster).
        """
        det = self._load("scrfd_500m")
        if batched is None:
            batched = self.on_gpu()
        images = [_padded_to_aspect(image) for image in images]
        if (not batched or len(images) < 2 or not getattr(det, "batched", False)
                or len({im.shape for im in images}) != 1):
            return [self.detect(image) for image in images]
        import cv2
        from insightface.model_zoo.scrfd import distance2bbox, distance2kps

        side = self.options.det_size
        boxed = [_letterbox(image, side) for image in images]  # same shape: the same scale for all
        scale = boxed[0][1]
        blob = cv2.dnn.blobFromImages([canvas for canvas, _ in boxed], 1.0 / det.input_std, (side, side),
                                      (det.input_mean,) * 3, swapRB=True)
        session = det._session_for_input_size((side, side)) if hasattr(det, "_session_for_input_size") \
            else det.session
        outs = session.run(det.output_names, {det.input_name: blob})
        thresh = self.options.det_thresh
        found = []
        for k in range(len(images)):
            scores_l, boxes_l, kps_l = [], [], []
            for i, stride in enumerate(det._feat_stride_fpn):
                scores = outs[i][k].reshape(-1)
                anchors = self._anchors(det, side // stride, side // stride, stride)
                keep = np.where(scores >= thresh)[0]
                boxes_l.append(distance2bbox(anchors, outs[i + det.fmc][k] * stride)[keep])
                kps_l.append(distance2kps(anchors, outs[i + 2 * det.fmc][k] * stride).reshape(-1, 5, 2)[keep])
                scores_l.append(scores[keep])
            scores = np.concatenate(scores_l)
            order = np.argsort(-scores, kind="stable")
            pre = np.hstack([np.concatenate(boxes_l) / scale, scores[:, None]]).astype(np.float32)[order]
            kpss = (np.concatenate(kps_l) / scale)[order]
            chosen = det.nms(pre) if len(pre) else []
            found.append(self._faces(pre[chosen], kpss[chosen]))
        return found

    @staticmethod
    def _anchors(det, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in det.center_cache:
            centers = (np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            if det._num_anchors > 1:
                centers = np.repeat(centers, det._num_anchors, axis=0)
            det.center_cache[key] = centers
        return det.center_cache[key]

    @staticmethod
    def _faces(boxes: np.ndarray, kpss: np.ndarray) -> list[Face]:
        faces = [Face(bbox=boxes[i, :4].astype(np.float32), score=float(boxes[i, 4]), kps=kpss[i].astype(np.float32))
                 for i in range(len(boxes))]
        faces.sort(key=lambda f: (f.center[0], f.center[1]))
        return faces

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray:
        return self.landmarks_many([(image, face)])[0]

    def landmarks_many(self, pairs: list[tuple[np.ndarray, Face]]) -> list[np.ndarray]:
        """106 points for many (image, face) pairs in one model call (faces of a whole batch of
        frames); the same crop and decoding as insightface's Landmark.get, which runs one face
        (its crop matrix is composed here: insightface composes it with scikit-image, whose
        import costs 0.1 s of every start)."""
        import cv2

        if not pairs:
            return []
        model = self._load("2d106det")
        side = model.input_size[0]
        crops, inverses = [], []
        for image, face in pairs:
            x0, y0, x1, y1 = (float(v) for v in face.bbox)
            scale = side / (max(x1 - x0, y1 - y0) * 1.5)
            m = np.array([[scale, 0.0, side / 2 - (x0 + x1) / 2 * scale],
                          [0.0, scale, side / 2 - (y0 + y1) / 2 * scale]])
            crops.append(cv2.warpAffine(image, m, (side, side), borderValue=0.0))
            inverses.append(cv2.invertAffineTransform(m))
        blob = cv2.dnn.blobFromImages(crops, 1.0 / model.input_std, (side, side),
                                      (model.input_mean,) * 3, swapRB=True)
        preds = model.session.run(model.output_names, {model.input_name: blob})[0]
        out = []
        for (_, face), pred, inv in zip(pairs, preds, inverses):
            pts = pred.reshape(-1, 2)[-model.lmk_num:].astype(np.float64)
            pts = (pts + 1) * (side // 2)
            pts = pts @ inv[:, :2].T + inv[:, 2]
            face.landmarks = pts.astype(np.float32)
            out.append(face.landmarks)
        return out

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        model = self._load("w600k_mbf")
        vec = np.asarray(model.get(image, _Probe(bbox=face.bbox, kps=face.kps)), dtype=np.float32)
        face.embedding = vec / (np.linalg.norm(vec) + 1e-12)
        return face.embedding


MAX_ASPECT = 64


def _padded_to_aspect(image: np.ndarray) -> np.ndarray:
    """A very thin strip (16 x 20000 px) would letterbox to a zero-pixel side; pad its short
    side (right or bottom, so face coordinates stay the same) to at most 1:MAX_ASPECT."""
    h, w = image.shape[:2]
    if max(h, w) <= MAX_ASPECT * min(h, w):
        return image
    need_h, need_w = max(h, -(-w // MAX_ASPECT)), max(w, -(-h // MAX_ASPECT))
    padded = np.zeros((need_h, need_w, *image.shape[2:]), image.dtype)
    padded[:h, :w] = image
    return padded


def _letterbox(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The detector's input for a whole image (as SCRFD makes it) and its scale."""
    import cv2

    h, w = image.shape[:2]
    if h / w > 1.0:
        new_h, new_w = side, int(side / (h / w))
    else:
        new_w, new_h = side, int(side * (h / w))
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, new_h / h
