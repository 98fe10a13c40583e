"""GHOST (sber-swap AEI-Net) on its native PyTorch checkpoints.

The crop is GHOST's: the best of five pose templates, at 256 px (its 224 crop
resized to 256 in one warp, so the face is resampled once), RGB in [-1, 1];
the identity is the raw iresnet100 embedding. fp16 on CUDA, fp32 on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from swapcli.core.errors import ModelError
from swapcli.swap.base import SourceFace
from swapcli.swap.crop import CropEngine, from_tensor, to_tensor


def blocks_of(state: dict) -> int:
    """AAD units per residual block in a GHOST checkpoint: G_unet_1block/2blocks/3blocks.

    Each unit is (AAD layer, ReLU, conv) at add_blocks.{3i, 3i+1, 3i+2}; the
    AAD layers are the entries with a conv1 weight.
    """
    prefix = "generator.AADBlk1.add_blocks."
    units = {k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix) and k.endswith(".conv1.weight")}
    if not 1 <= len(units) <= 3:
        raise ModelError("checkpoint is not a GHOST AEI-Net state_dict (G_unet_1block/2blocks/3blocks)")
    return len(units)


class GhostEngine(CropEngine):
    name = "ghost"
    template = "ghost_224"
    size = 256

    def __init__(self, generator, embedder, device: str = "auto", mix: float | None = None) -> None:
        """`generator`: a checkpoint path, or a module/callable G(xt, z) -> (y, attrs) (tests)."""
        import torch

        from swapcli.swap.torch_device import torch_device

        super().__init__(embedder, mix)
        self.torch = torch
        self.device = torch_device(device)
        self.half = self.device.type == "cuda"
        if isinstance(generator, (str, Path)):
            generator = self.load(Path(generator))
        if isinstance(generator, torch.nn.Module):
            generator = generator.to(self.device).eval()
            if self.half:  # tensor cores: fp16 weights, NHWC activations, cuDNN autotuned per batch shape
                generator = generator.half().to(memory_format=torch.channels_last)
                torch.backends.cudnn.benchmark = True
        self.generator = generator

    @staticmethod
    def load(path: Path):
        from swapcli.models.checkpoint import load_into, load_state_dict
        from swapcli.swap.nets.aei import AEINet

        state = load_state_dict(path)
        net = AEINet(num_blocks=blocks_of(state))
        load_into(net, state)
        return net

    def source_latent(self, sources: Sequence[SourceFace]) -> np.ndarray:
        return self.raw_identity(sources)  # GHOST feeds the embedding unnormalised

    def generate(self, crops: np.ndarray, latents: np.ndarray) -> np.ndarray:
        if self.device.type != "cuda":
            return self._generate_host(crops, latents)
        torch = self.torch
        with torch.inference_mode():
            x = crops_to_device(crops, self.device, torch.float16).contiguous(memory_format=torch.channels_last)
            z = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self.device, torch.float16)
            return crops_from_device(self.generator(x, z)[0])

    def _generate_host(self, crops: np.ndarray, latents: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(to_tensor(crops, "tanh")).to(self.device)
            z = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(self.device)
            y = self.generator(x, z)[0].float().cpu().numpy()
        return from_tensor(y, "tanh")


def crops_to_device(crops: np.ndarray, device, dtype):
    """(B, S, S, 3) BGR uint8 -> (B, 3, S, S) RGB in [-1, 1] on the device: the uint8 crops cross
    the bus (4x less than float32; from pinned memory on CUDA) and are normalised there."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops))
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True)
    return x.flip(-1).permute(0, 3, 1, 2).to(dtype).div_(127.5).sub_(1.0)


def crops_from_device(y) -> np.ndarray:
    """(B, 3, S, S) tanh RGB on the device -> (B, S, S, 3) float32 BGR 0..255 on the host."""
    y = ((y.float() * 0.5 + 0.5).clamp_(0, 1) * 255.0).flip(1).permute(0, 2, 3, 1)
    return y.contiguous().cpu().numpy()
