"""onnxruntime sessions, created one way for every neural model.

onnxruntime silently falls back to the CPU when the CUDA provider is listed
but fails to load (a missing cuDNN, a CPU/GPU package clash); users then see
a 20x slowdown and no error. Here a session that was asked for CUDA and did
not get it is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from swapcli.core.errors import ModelError

log = logging.getLogger("swapcli")


def create_session(path: str | Path, device: str = "auto", threads: int = 0):
    import onnxruntime as ort

    from swapcli.core.device import providers_for

    providers = providers_for(device)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several types for a bad or truncated file
        raise ModelError(f"cannot load ONNX model {path}: {str(exc).strip().splitlines()[0]}") from exc
    got = session.get_providers()
    if "CUDAExecutionProvider" in providers and "CUDAExecutionProvider" not in got:
        if device == "cuda":
            raise ModelError(f"--device cuda: the CUDA provider failed to load for {Path(path).name} "
                             "(see `swapcli doctor`); refusing to run on the CPU silently")
        log.warning("CUDA provider failed to load for %s; running on the CPU", Path(path).name)
    return session


def input_shape(session, name: str) -> list:
    for item in session.get_inputs():
        if item.name == name:
            return list(item.shape)
    raise ModelError(f"model has no input named '{name}' (inputs: {[i.name for i in session.get_inputs()]})")


def static_batch(session) -> bool:
    """True when the first input's batch dimension is fixed at 1 (inswapper's published graph)."""
    first = session.get_inputs()[0].shape
    return bool(first) and first[0] == 1
