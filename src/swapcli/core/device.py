"""onnxruntime provider selection: deliberate, and loud when CUDA is asked for but missing."""

from __future__ import annotations

from swapcli.core.errors import ModelError

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelError(
                "--device cuda was asked for but onnxruntime has no CUDA provider "
                f"(available: {', '.join(available)}); install the 'gpu' extra"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    raise ModelError(f"unknown device '{device}' (choose from {', '.join(DEVICES)})")
