"""torch device choice, with the same rule as onnxruntime's: CUDA asked for and
missing is an error, never a silent CPU run."""

from __future__ import annotations

from swapcli.core.errors import ModelError


def torch_device(device: str):
    import torch

    if device in ("cuda", "auto") or device.startswith("cuda:"):
        if torch.cuda.is_available():
            return torch.device("cuda" if device == "auto" else device)
        if device != "auto":
            raise ModelError(f"--device {device} was asked for but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    return torch.device("cpu")
