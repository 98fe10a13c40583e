"""Optional face restoration (GFPGAN, CodeFormer, GPEN) of the swapped face.

Run on the engine's output before paste-back, so the GHOST mask and the
seams are computed on the face the user will see, and only a share
(`--enhance-blend`) of the restored face is kept: restorers invent detail
and drift identity at full strength.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from swapcli.analyse.face import Face
from swapcli.core.errors import ModelError
from swapcli.core.geometry import invert
from swapcli.core.templates import align_matrix, warp_crop
from swapcli.swap.base import SwapResult
from swapcli.swap.crop import from_tensor, paste_region, to_tensor

log = logging.getLogger("swapcli")

# --enhance NAME -> registry model name.
ENHANCERS = {"gfpgan": "gfpgan_1.4", "codeformer": "codeformer", "gpen256": "gpen_bfr_256", "gpen512": "gpen_bfr_512"}
CODEFORMER_FIDELITY = 0.5  # CodeFormer's `weight` input: 0 = most restoration, 1 = most faithful


class Restorer:
    def __init__(self, path: str | Path, template: str = "ffhq_512", norm: str = "tanh",
                 amount: float = 0.8, device: str = "auto", threads: int = 0, name: str = "restore") -> None:
        from swapcli.core.onnx import create_session

        self.name = name
        self.session = create_session(path, device, threads)
        inputs = self.session.get_inputs()
        shape = inputs[0].shape
        if len(shape) != 4 or not isinstance(shape[2], int):
            raise ModelError(f"{Path(path).name}: expected a [1,3,S,S] image input, got {shape}")
        self.input = inputs[0].name
        self.extra = {i.name: np.array([CODEFORMER_FIDELITY], dtype=np.float64 if "double" in i.type else np.float32)
                      for i in inputs[1:]}  # CodeFormer's fidelity weight
        self.size = int(shape[2])
        self.template = template
        self.norm = norm
        self.amount = float(amount)

    def apply(self, result: SwapResult, target: Face) -> None:
        """Restore the swapped face in place: in the engine's crop when there is one (before
        paste-back, wherever that runs), else in result.image (ROI pixels)."""
        if self.amount <= 0:
            return
        if result.crop is not None and result.matrix is not None:
            self._apply_crop(result, target)
            return
        x0, y0 = result.roi[:2]
        kps = target.kps - np.array([x0, y0], dtype=np.float32)
        matrix = align_matrix(kps, self.template, self.size)
        face = np.clip(result.image + 0.5, 0, 255).astype(np.uint8)
        crop = warp_crop(face, matrix, self.size)
        y = self.session.run(None, {self.input: to_tensor(crop[None], self.norm), **self.extra})[0]
        restored = from_tensor(y, self.norm)[0]
        (rx0, ry0, rx1, ry1), back, footprint = paste_region(restored, matrix, face.shape)
        region = result.image[ry0:ry1, rx0:rx1]
        weight = (self.amount * footprint)[..., None]
        region[...] = region * (1.0 - weight) + back * weight

    def _apply_crop(self, result: SwapResult, target: Face) -> None:
        face = np.asarray(result.crop, dtype=np.float32)
        to_restore = align_matrix(target.kps, self.template, self.size)  # frame -> restorer crop
        back = invert(result.matrix)  # engine crop -> frame
        matrix = np.hstack([to_restore[:, :2] @ back[:, :2], (to_restore[:, :2] @ back[:, 2] + to_restore[:, 2])[:, None]])
        crop = warp_crop(np.clip(face + 0.5, 0, 255).astype(np.uint8), matrix, self.size)
        y = self.session.run(None, {self.input: to_tensor(crop[None], self.norm), **self.extra})[0]
        restored = from_tensor(y, self.norm)[0]
        (rx0, ry0, rx1, ry1), warped, footprint = paste_region(restored, matrix, face.shape)
        region = face[ry0:ry1, rx0:rx1]
        weight = (self.amount * footprint)[..., None]
        region[...] = region * (1.0 - weight) + warped * weight
        result.crop = face
