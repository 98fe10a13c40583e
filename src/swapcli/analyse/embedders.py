"""Identity embedders the neural engines need, each on its own crop convention.

A generator only understands the embedding space it was trained with
(inswapper and hyperswap: w600k_r50; GHOST: its iresnet100 `backbone.pth`),
so these are separate from the analyser's MobileFaceNet, which is used only
for matching faces (--reference, tracking, eval).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from swapcli.core.templates import align_matrix, warp_crop


class OnnxArcFace:
    """insightface ArcFace ONNX (w600k_r50 / w600k_mbf): arcface_112 crop, RGB, (x-127.5)/127.5."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0) -> None:
        from swapcli.core.onnx import create_session

        self.path = Path(path)
        self.session = create_session(path, device, threads)
        self.input = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.size = shape[2] if isinstance(shape[2], int) else 112

    def embed(self, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
        crop = warp_crop(image, align_matrix(kps, "arcface_112", self.size), self.size)
        x = (cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) - 127.5) / 127.5
        out = self.session.run(None, {self.input: x.transpose(2, 0, 1)[None]})[0]
        return np.asarray(out, dtype=np.float32).ravel()


class TorchArcFace:
    """GHOST's iresnet100 `backbone.pth`: 112 crop on GHOST's templates (its 224 crop at half size),
    RGB, (x/255-0.5)/0.5; the raw 512-d output is what the generator was trained on."""

    def __init__(self, path: str | Path, device: str = "cpu", module=None) -> None:
        import torch

        from swapcli.swap.torch_device import torch_device

        self.path = Path(path) if path else None
        self.device = torch_device(device)
        if module is None:
            from swapcli.models.checkpoint import load_into
            from swapcli.swap.nets.iresnet import iresnet100

            module = iresnet100()
            load_into(module, self.path)
        self.module = module.to(self.device).eval()
        self.torch = torch

    def embed(self, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
        torch = self.torch
        crop = warp_crop(image, align_matrix(kps, "ghost_224", 112), 112)
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
        with torch.inference_mode():
            t = torch.from_numpy(x.transpose(2, 0, 1)[None].copy()).to(self.device)
            out = self.module(t).float().cpu().numpy()
        return out.ravel().astype(np.float32)


class OnnxConverter:
    """facefusion's crossface converters: ArcFace (w600k_r50) embedding -> the space a
    GHOST/SimSwap ONNX generator expects."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0) -> None:
        from swapcli.core.onnx import create_session

        self.session = create_session(path, device, threads)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, embedding: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input: np.asarray(embedding, np.float32).reshape(1, -1)})[0]
        return np.asarray(out, dtype=np.float32).ravel()
