"""onnxruntime sessions, created one way for every neural model.

onnxruntime silently falls back to the CPU when the CUDA provider is listed
but fails to load (a missing cuDNN, a CPU/GPU package clash); users then see
a 20x slowdown and no error. Here a session that was asked for CUDA and did
not get it is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from swapcli.core.errors import ModelError

log = logging.getLogger("swapcli")


def session_options(threads: int = 0):
    """ONNX Runtime options for every swapcli session. Worker threads sleep instead of spinning
    when idle: swapcli runs analysis and swapping on two threads at once, next to ffmpeg, and
    spinning pool threads took the cores from the work (measured on 2 cores with the swap thread
    busy: the analysis of a 720p frame took 333 ms spinning, 47 ms not)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def create_session(model: str | Path | bytes, device: str = "auto", threads: int = 0, name: str | None = None,
                   trt_profile: dict[str, tuple[list[int], list[int], list[int]]] | None = None):
    """An InferenceSession on `device`, from a file path or from a serialized model (bytes).

    `name` labels a bytes model in messages (default "in-memory ONNX model"); a path
    labels itself. A session asked for a GPU provider that did not load is an error
    (a warning for "auto"). `trt_profile` ({input: (min, opt, max) shapes}) gives TensorRT
    an explicit shape range for dynamic inputs, so it builds one engine for it instead of
    rebuilding whenever a larger batch comes; other providers ignore it.
    """
    import onnxruntime as ort

    from swapcli.core.device import CUDA, TENSORRT, provider_names, providers_for

    providers = providers_for(device)
    if trt_profile:
        providers = [_with_profile(p, trt_profile) for p in providers]
    options = session_options(threads)
    in_memory = isinstance(model, (bytes, bytearray, memoryview))
    label = (name or "in-memory ONNX model") if in_memory else str(model)
    short = label if in_memory else Path(model).name
    try:
        source = (model if isinstance(model, bytes) else bytes(model)) if in_memory else str(model)
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several types for a bad or truncated file
        raise ModelError(f"cannot load ONNX model {label}: {str(exc).strip().splitlines()[0]}") from exc
    got = session.get_providers()
    wanted = provider_names(providers)
    if TENSORRT in wanted and TENSORRT not in got:
        raise ModelError(f"--device {device}: the TensorRT provider failed to load for {short} (TensorRT's "
                         "libraries missing from the library path? see `swapcli doctor`, or use --device cuda); "
                         "refusing to run without it silently")
    if CUDA in wanted and CUDA not in got:
        if device != "auto":
            raise ModelError(f"--device {device}: the CUDA provider failed to load for {short} "
                             "(see `swapcli doctor`); refusing to run on the CPU silently")
        log.warning("CUDA provider failed to load for %s; running on the CPU", short)
    return session


def _with_profile(provider, profile: dict):
    from swapcli.core.device import TENSORRT

    if not (isinstance(provider, tuple) and provider[0] == TENSORRT):
        return provider

    def spec(which: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shapes[which])}" for name, shapes in profile.items())

    options = {**provider[1], "trt_profile_min_shapes": spec(0), "trt_profile_opt_shapes": spec(1),
               "trt_profile_max_shapes": spec(2)}
    return (TENSORRT, options)


def input_shape(session, name: str) -> list:
    for item in session.get_inputs():
        if item.name == name:
            return list(item.shape)
    raise ModelError(f"model has no input named '{name}' (inputs: {[i.name for i in session.get_inputs()]})")


def static_batch(session) -> bool:
    """True when the first input's batch dimension is fixed at 1 (inswapper's published graph)."""
    first = session.get_inputs()[0].shape
    return bool(first) and first[0] == 1


# --- IO binding ----------------------------------------------------------------------

_ORT_TYPES = {  # onnxruntime's type strings -> numpy
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "data_ptr")


def _numpy_type(dtype):
    """torch dtype -> the element type io_binding takes (a numpy type, or an ONNX enum for bfloat16)."""
    import torch

    table = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64,
             torch.int64: np.int64, torch.int32: np.int32, torch.int8: np.int8, torch.uint8: np.uint8,
             torch.bool: np.bool_, torch.bfloat16: 16}  # 16 = onnx.TensorProto.BFLOAT16
    if dtype not in table:
        raise ModelError(f"cannot bind a torch {dtype} tensor to onnxruntime")
    return table[dtype]


def _torch_type(ort_type: str):
    import torch

    table = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
             "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(int8)": torch.int8,
             "tensor(uint8)": torch.uint8, "tensor(bool)": torch.bool, "tensor(bfloat16)": torch.bfloat16}
    return table.get(ort_type)


def _output_meta(session, output: str):
    for item in session.get_outputs():
        if item.name == output:
            return item
    raise ModelError(f"model has no output named '{output}' (outputs: {[o.name for o in session.get_outputs()]})")


def _output_shape(meta, feeds: dict) -> list[int] | None:
    """The output's shape when only its first dim is symbolic (taken as the batch of the first input)."""
    shape = list(meta.shape)
    first = next(iter(feeds.values()))
    for i, dim in enumerate(shape):
        if isinstance(dim, int) and dim >= 0:
            continue
        if i != 0:
            return None
        shape[0] = int(first.shape[0])
    return shape


def _gpu_device_id(session) -> int | None:
    """The CUDA device the session runs on; None when it runs on no CUDA-memory provider."""
    from swapcli.core.device import CUDA, TENSORRT

    got = session.get_providers()
    options = session.get_provider_options()
    for name in (TENSORRT, CUDA):
        if name in got:
            return int(options.get(name, {}).get("device_id", 0) or 0)
    return None


def run_bound(session, feeds: dict, output: str):
    """One output of one run through io_binding, with no extra copies.

    numpy inputs: bound as CPU inputs, the output comes back as numpy (equal to
    session.run). torch CUDA inputs on a session with a CUDA/TensorRT provider: their
    device memory is bound directly and the output is written into a torch tensor
    on the same GPU, which is returned. torch CPU tensors (or CUDA tensors on a
    CPU-only session) go through numpy and come back as torch on their device.
    Inputs must already have the graph's element types.
    """
    tensors = [v for v in feeds.values() if _is_torch(v)]
    if not tensors:
        binding = session.io_binding()
        arrays = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        for name, arr in arrays.items():
            binding.bind_cpu_input(name, arr)
        binding.bind_output(output, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
    device_id = _gpu_device_id(session)
    home = next((t.device for t in tensors if t.is_cuda), tensors[0].device)
    if device_id is None or home.type != "cuda":
        import torch

        arrays = {k: (v.detach().cpu().numpy() if _is_torch(v) else v) for k, v in feeds.items()}
        return torch.from_numpy(run_bound(session, arrays, output)).to(home)
    return _run_cuda(session, feeds, output, device_id, home)


def _run_cuda(session, feeds: dict, output: str, device_id: int, home):
    import torch

    gpu = torch.device("cuda", device_id)
    binding = session.io_binding()
    alive = {}  # the bound memory must outlive the run
    for name, value in feeds.items():
        if _is_torch(value):
            t = value.detach().to(gpu).contiguous()
            alive[name] = t
            binding.bind_input(name, "cuda", device_id, _numpy_type(t.dtype), tuple(t.shape), t.data_ptr())
        else:
            arr = np.ascontiguousarray(value)
            alive[name] = arr
            binding.bind_cpu_input(name, arr)
    meta = _output_meta(session, output)
    shape, dtype = _output_shape(meta, feeds), _torch_type(meta.type)
    result = None
    if shape is not None and dtype is not None:
        result = torch.empty(shape, dtype=dtype, device=gpu)
        binding.bind_output(output, "cuda", device_id, _numpy_type(dtype), tuple(shape), result.data_ptr())
    else:  # a shape only the run knows: onnxruntime allocates on the GPU
        binding.bind_output(output, "cuda", device_id)
    # torch queued the inputs on its own stream; onnxruntime's CUDA provider uses another one
    torch.cuda.current_stream(gpu).synchronize()
    if home.type == "cuda" and home != gpu:
        torch.cuda.current_stream(home).synchronize()
    session.run_with_iobinding(binding)  # synchronises its stream before returning (the default RunOptions)
    if result is None:
        value = binding.get_outputs()[0]
        result = torch.from_numpy(value.numpy()).to(gpu)  # rare path: one device->host->device round trip
    return result if result.device == home else result.to(home)
