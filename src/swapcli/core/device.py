"""onnxruntime provider selection: deliberate, and loud when a GPU is asked for but missing.

Providers come back in the form onnxruntime's InferenceSession accepts: a name,
or a (name, options) tuple where options matter ("cuda:1" picks device_id 1;
"tensorrt" turns on fp16 and the engine cache). Code that only needs the names
uses `provider_names`.
"""

from __future__ import annotations

from pathlib import Path

from swapcli.core.errors import ModelError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "tensorrt", "tensorrt:N")
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"


def provider_names(providers) -> list[str]:
    """Names only, from a list of names and/or (name, options) tuples."""
    return [p[0] if isinstance(p, (tuple, list)) else p for p in providers]


def parse_device(device: str) -> tuple[str, int | None]:
    """'cuda:1' -> ('cuda', 1); 'tensorrt' -> ('tensorrt', None); unknown -> ModelError."""
    kind, sep, index = device.partition(":")
    if kind in ("auto", "cpu") and not sep:
        return kind, None
    if kind in ("cuda", "tensorrt"):
        if not sep:
            return kind, None
        if index.isdigit():
            return kind, int(index)
    raise ModelError(f"unknown device '{device}' (choose from {', '.join(DEVICES)})")


def tensorrt_cache_dir() -> Path:
    """Where TensorRT keeps its built engines (building one takes minutes; reusing it, seconds)."""
    import contextlib

    from swapcli.models.locate import user_cache_dir

    path = user_cache_dir() / "tensorrt"
    with contextlib.suppress(OSError):  # TensorRT makes only the last folder; an unwritable cache costs rebuilds
        path.mkdir(parents=True, exist_ok=True)
    return path


def providers_for(device: str) -> list:
    import onnxruntime as ort

    kind, index = parse_device(device)
    available = ort.get_available_providers()
    if kind == "cpu":
        return [CPU]
    if kind == "auto":
        if CUDA in available:
            return [CUDA, CPU]
        return [CPU]
    if CUDA not in available:
        raise ModelError(
            f"--device {device} was asked for but onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); install the 'gpu' extra"
        )
    if kind == "cuda":
        if index is None:
            return [CUDA, CPU]
        return [(CUDA, {"device_id": index}), CPU]
    # tensorrt: TensorRT first, CUDA for the nodes it does not take, then the CPU
    if TENSORRT not in available:
        raise ModelError(
            f"--device {device} was asked for but onnxruntime has no TensorRT provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu with TensorRT "
            "and put TensorRT's libraries on the library path, or use --device cuda"
        )
    device_id = index or 0
    trt = {
        "device_id": device_id,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tensorrt_cache_dir()),
    }
    return [(TENSORRT, trt), (CUDA, {"device_id": device_id}), CPU]


def share_cores(threads: int) -> None:
    """A worker given `threads` cores (batch -j, a --device list, a cluster slot) keeps OpenCV to
    them too; onnxruntime's sessions get the same number (EngineOptions.session_threads)."""
    if not threads:
        return
    try:
        import cv2

        cv2.setNumThreads(threads)
    except Exception:  # noqa: BLE001 - a missing or odd OpenCV only loses the limit
        pass
