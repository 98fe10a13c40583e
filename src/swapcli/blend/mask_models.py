"""The occluder (XSeg) and face-parser (BiSeNet) networks behind `--mask occlusion|region`.

Both are loaded like the generators: on the engine's device (the same onnxruntime providers,
so a GPU that fails to load is an error, not a silent CPU run), a graph exported with a batch
of 1 rewritten to take a batch and checked once against one-by-one runs (core/onnx_batch), and
the faces of many frames run in one call. Their layouts differ (the occluder is channels last,
the parser channels first), and a model of the wrong kind would otherwise run on garbage and
give a plausible-looking mask, so the input layout is checked at load: a mix-up is one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swapcli.core.errors import ModelError, UsageError

log = logging.getLogger("swapcli")

OCCLUDERS = ("xseg_1", "xseg_2", "xseg_3")  # facefusion's default first
PARSERS = ("bisenet_resnet_34", "bisenet_resnet_18")
MANY = "many"  # --occluder-model many: the minimum of every occluder


@dataclass(frozen=True)
class NetKind:
    """A published interface: input name and layout, output layout (batch first, free)."""

    name: str  # occluder | parser
    size: int
    input_dims: tuple[int, ...]  # without the batch
    output_dims: tuple[int, ...]
    layout: str  # for messages
    names: tuple[str, ...]  # registry models of this kind


OCCLUDER = NetKind("occluder", 256, (256, 256, 3), (256, 256, 1), "[1,256,256,3] (channels last, BGR in [0,1])",
                   OCCLUDERS)
PARSER = NetKind("parser", 512, (3, 512, 512), (19, 512, 512), "[1,3,512,512] (channels first, RGB, ImageNet-normalised)",
                 PARSERS)


def _dims(value_info) -> list:
    """A graph value's dims: ints, None where free (symbolic or unknown)."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in t.shape.dim]


class MaskNet:
    """One occluder or parser session; `run` takes (B, *input_dims) float32 and batches it."""

    max_batch = 32
    verify_rtol = {"CPUExecutionProvider": 1e-4, "CUDAExecutionProvider": 1e-3, "TensorrtExecutionProvider": 2e-2}

    def __init__(self, kind: NetKind, path: str | Path, device: str = "auto", threads: int = 0,
                 label: str | None = None) -> None:
        import onnx

        from swapcli.core.onnx import create_session

        self.kind = kind
        self.label = label or Path(path).stem
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf and OS errors for a bad or truncated file
            raise ModelError(f"cannot load ONNX model {path}: {str(exc).strip().splitlines()[0]}") from exc
        self._check(model, Path(path).name)
        static_one = self._input_dims(model)[0] == 1
        self.session = self._batched(model, path, device, threads) if static_one else None
        del model
        if self.session is None:
            self.session = create_session(path, device, threads)
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        first = self.session.get_inputs()[0].shape[0]
        self.batched = not (isinstance(first, int) and first == 1)

    @staticmethod
    def _input_dims(model) -> list:
        inits = {i.name for i in model.graph.initializer}
        return _dims(next(i for i in model.graph.input if i.name not in inits)) or [None]

    def _check(self, model, filename: str) -> None:
        """The published layout, or one line saying what the file is instead."""
        inits = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in inits]
        want = self.kind
        if len(inputs) != 1 or len(model.graph.output) < 1:
            raise ModelError(f"{filename} is not a face {want.name}: inputs {[i.name for i in inputs]}, "
                             f"expected one input {want.layout}")
        got, out = _dims(inputs[0]), _dims(model.graph.output[0])

        def fits(dims: list, expected: tuple[int, ...]) -> bool:
            return len(dims) == len(expected) + 1 and all(d is None or d == e for d, e in zip(dims[1:], expected))

        if not fits(got, want.input_dims):
            hint = ""
            if len(got) == 4 and got[1] == 3 and want.input_dims[-1] == 3:
                hint = "; it is channels first (a parser's layout?)"
            elif len(got) == 4 and got[3] == 3 and want.input_dims[0] == 3:
                hint = "; it is channels last (an occluder's layout?)"
            raise ModelError(f"{filename} does not fit --{want.name}-model: its input is {got}, a face {want.name} "
                             f"takes {want.layout}{hint}")
        if out and not fits(out, want.output_dims):
            raise ModelError(f"{filename} does not fit --{want.name}-model: its output is {out}, "
                             f"expected [1,{','.join(map(str, want.output_dims))}]")

    def _batched(self, model, path: str | Path, device: str, threads: int):
        """A session on the batch-rewritten graph, or None (then the file runs face by face)."""
        from swapcli.core.onnx_batch import batched_session

        dims = self.kind.input_dims

        def feeds(inputs: dict, n: int, rng: np.random.Generator) -> dict:
            return {name: rng.random((n, *dims), dtype=np.float32) for name in inputs}

        return batched_session(model, Path(path).name, device, threads, feeds, self.verify_rtol)[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        from swapcli.core.onnx import run_bound

        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.max_batch if self.batched else 1
        return np.concatenate([np.asarray(run_bound(self.session, {self.input: x[i:i + step]}, self.output))
                               for i in range(0, len(x), step)])


def resolve(value: str, kind: NetKind, weights_dir: str | None) -> list[tuple[Path, str]]:
    """--occluder-model / --parser-model: a registry name (verified), `many` (occluders: all three)
    or the user's own file (loaded unverified, and said so). Returns (path, label) pairs."""
    from swapcli.models.locate import locate

    names = list(kind.names) if (kind is OCCLUDER and value == MANY) else [value] if value in kind.names else []
    if names:
        found = []
        for name in names:
            try:
                found.append((locate(name, weights_dir).path, name))
            except ModelError as exc:
                raise ModelError(f"--{kind.name}-model {value} needs model '{name}': {exc}") from exc
        return found
    file = Path(value)
    if not file.is_file():
        if file.suffix or "/" in value or "\\" in value:
            raise UsageError(f"{kind.name} file not found: {file}")
        extra = f", {MANY}" if kind is OCCLUDER else ""
        raise UsageError(f"--{kind.name}-model '{value}': choose from {', '.join(kind.names)}{extra}, or give an .onnx file")
    log.warning("loading your own %s %s UNVERIFIED (no registry hash)", kind.name, file)
    return [(file, file.stem)]


def installed(kind: NetKind, weights_dir: str | None) -> tuple[Path, str] | None:
    """The first registry model of this kind that is installed and verified (no --*-model given)."""
    from swapcli.models.locate import is_installed

    for name in kind.names:
        found = is_installed(name, weights_dir)
        if found is not None:
            return found.path, name
    return None
