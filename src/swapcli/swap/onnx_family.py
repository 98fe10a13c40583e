"""One table-driven adapter for the ONNX generators: inswapper_128 and the
facefusion-converted family (hyperswap, ghost_N_256, simswap, blendswap, uniface).

They differ only in crop template and size, pixel normalisation, and how the
source identity becomes the `source` input; the registry entry gives the
first two, LATENT_RULES the third. Everything else (crop, paste-back, mask)
is shared with the other engines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from swapcli.core.errors import ModelError, UsageError
from swapcli.core.onnx_batch import graph_inputs
from swapcli.core.templates import align_matrix, warp_crop
from swapcli.swap.base import SourceFace
from swapcli.swap.crop import CropEngine, to_tensor
from swapcli.swap.identity import normed

log = logging.getLogger("swapcli")

# How each engine turns the source into its `source` input.
LATENT_RULES = {
    "inswapper": "emap",  # normed w600k_r50 embedding @ emap (the graph's last initializer), renormalised
    "hyperswap": "normed",  # L2-normalised w600k_r50 embedding
    "ghost_onnx": "converted",  # crossface_ghost(embedding), unnormalised
    "simswap": "converted_normed",  # crossface_simswap(embedding), L2-normalised
    "blendswap": "image",  # the aligned source photo itself
    "uniface": "image",
}
# Image-driven engines: the source photo's crop template (size comes from the graph); RGB in [0, 1].
SOURCE_TEMPLATES = {"blendswap": "arcface_112", "uniface": "ffhq_512"}
# The model each engine loads when no --model is given.
DEFAULT_MODELS = {
    "inswapper": "inswapper_128",
    "hyperswap": "hyperswap_1a_256",
    "ghost_onnx": "ghost_2_256",
    "simswap": "simswap_256",
    "blendswap": "blendswap_256",
    "uniface": "uniface_256",
}


@dataclass(frozen=True)
class GeneratorConfig:
    engine: str
    template: str
    size: int
    norm: str

    @property
    def latent(self) -> str:
        return LATENT_RULES[self.engine]


def emap_from_graph(graph, path: str | Path) -> np.ndarray:
    """inswapper's identity projection from a loaded graph: its last initializer, 512x512."""
    from onnx import numpy_helper

    try:
        emap = numpy_helper.to_array(graph.initializer[-1])
    except Exception as exc:
        raise ModelError(f"cannot read inswapper's emap from {path}: {str(exc).splitlines()[0]}") from exc
    if emap.shape != (512, 512):
        raise ModelError(f"{path}: last initializer is {emap.shape}, not inswapper's 512x512 emap")
    return emap.astype(np.float32)


def read_emap(path: str | Path) -> np.ndarray:
    """inswapper's identity projection: the graph's last initializer, 512x512 (loads the file)."""
    import onnx

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise ModelError(f"cannot read inswapper's emap from {path}: {str(exc).splitlines()[0]}") from exc
    return emap_from_graph(graph, path)


class OnnxGenerator(CropEngine):
    """An ONNX generator. The file is parsed once (onnx.load): emap comes from that parse,
    and a graph exported with a static batch of 1 (inswapper's) is rewritten to take a
    batch (core/onnx_batch), checked once at load against one-by-one runs, and run in
    batches of up to `max_batch` crops; a graph that fails the check keeps its original
    form and runs face by face (`batched` says which). Pixel boost (crop.py) hands a face's
    k² sub-images over as one batch, so it gets one call per face, or k² without a batch."""

    # batch vs one by one, relative to the output's range, by the session's first provider: on
    # the CPU the same kernels run either way; cuDNN may pick other algorithms (TF32) for another
    # batch size, and TensorRT runs in fp16. Samples mixed by a bad rewrite differ far more.
    verify_rtol = {"CPUExecutionProvider": 1e-4, "CUDAExecutionProvider": 1e-3, "TensorrtExecutionProvider": 2e-2}

    def __init__(self, config: GeneratorConfig, path: str | Path, embedder=None, converter=None,
                 device: str = "auto", threads: int = 0, mix: float | None = None) -> None:
        import onnx

        if config.latent == "image" and mix is not None:
            raise UsageError(f"--mix needs an embedding engine; {config.engine} takes the source photo itself")
        super().__init__(embedder, mix)
        self.name = config.engine
        self.config = config
        self.template = config.template
        self.converter = converter
        if config.latent in ("converted", "converted_normed") and converter is None:
            raise ModelError(f"{config.engine} needs its crossface converter model")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf and OS errors for a bad or truncated file
            raise ModelError(f"cannot load ONNX model {path}: {str(exc).strip().splitlines()[0]}") from exc
        inputs = graph_inputs(model)
        if set(inputs) != {"target", "source"}:
            raise ModelError(f"{Path(path).name} is not a {config.engine} generator: inputs {sorted(inputs)}, "
                             "expected 'source' and 'target'")
        self.emap = emap_from_graph(model.graph, path) if config.latent == "emap" else None
        self.batch_check = None  # the load-time BatchCheck when the graph was rewritten
        self.batch_changes: list[str] = []
        static_one = bool(inputs["target"]) and inputs["target"][0] == 1
        self.session = self._batched_session(model, path, device, threads) if static_one else None
        del model  # the weights live in the session now; the parse is not kept
        if self.session is None:
            from swapcli.core.onnx import create_session

            self.session = create_session(path, device, threads)
        session_inputs = {i.name: i.shape for i in self.session.get_inputs()}
        shape = session_inputs["target"]
        self.size = shape[2] if isinstance(shape[2], int) else config.size
        self.batched = not (isinstance(shape[0], int) and shape[0] == 1)
        self.source_shape = session_inputs["source"]
        self.output = self.session.get_outputs()[0].name

    # -- batching ---------------------------------------------------------
    def _batched_session(self, model, path: str | Path, device: str, threads: int):
        """A session on the batch-rewritten graph, or None (then the caller loads the original file).

        Consumes `model` (edited in place: no second copy of the weights). Errors that are
        the user's to fix (--device asked for a GPU that is not there) are raised as usual;
        anything that goes wrong with the rewrite itself means the per-face loop.
        """
        from swapcli.core.onnx_batch import batched_session

        session, self.batch_check, self.batch_changes = batched_session(
            model, Path(path).name, device, threads, self._probe_feeds, self.verify_rtol, self._trt_profile)
        return session

    def _trt_profile(self, inputs: dict) -> dict | None:
        """Batch 1..max_batch for TensorRT (the other dims as the graph fixes them)."""
        shapes = {}
        for name, dims in inputs.items():
            if not dims or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
                return None  # a dim other than the batch is free: let TensorRT pick its profile
            shapes[name] = tuple([b, *dims[1:]] for b in (1, self.max_batch, self.max_batch))
        return shapes

    def _probe_feeds(self, inputs: dict, n: int, rng: np.random.Generator) -> dict:
        """n distinct, realistic samples for the load-time check: crops in the model's pixel range,
        sources shaped like what source_latent feeds."""
        def dims(shape, fallback):
            return [n] + [d if isinstance(d, int) else f for d, f in zip(shape[1:], fallback)]

        size = self.config.size
        crops = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        target_shape = dims(inputs["target"], (3, size, size))
        if target_shape[2:] != [size, size]:
            crops = rng.integers(0, 256, (n, target_shape[2], target_shape[3], 3), dtype=np.uint8)
        target = to_tensor(crops, self.config.norm)
        rule = self.config.latent
        if rule == "image":
            shape = dims(inputs["source"], (3, size, size))
            source = rng.random(shape, dtype=np.float32)
        else:
            shape = dims(inputs["source"], (512,))
            source = rng.standard_normal(shape).astype(np.float32)
            if rule != "converted":  # every rule but ghost's feeds a unit vector
                source /= np.linalg.norm(source.reshape(n, -1), axis=1).reshape([n] + [1] * (source.ndim - 1))
        return {"target": target, "source": source}

    def source_latent(self, sources: Sequence[SourceFace]) -> np.ndarray:
        rule = self.config.latent
        if rule == "image":
            side = self.source_shape[2] if isinstance(self.source_shape[2], int) else self.size
            src = sources[0]
            template = SOURCE_TEMPLATES[self.config.engine]
            crop = warp_crop(src.image, align_matrix(src.face.kps, template, side), side)
            return to_tensor(crop[None], "unit")[0]
        raw = self.raw_identity(sources)
        if rule == "emap":
            return normed(normed(raw) @ self.emap).astype(np.float32)
        if rule == "normed":
            return normed(raw).astype(np.float32)
        converted = self.converter(raw)
        return (normed(converted) if rule == "converted_normed" else converted).astype(np.float32)

    def generate(self, crops: np.ndarray, latents: np.ndarray) -> np.ndarray:
        from swapcli.core.onnx import run_bound
        from swapcli.swap.crop import from_tensor

        x = to_tensor(crops, self.config.norm)
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        step = max(1, self.max_batch) if self.batched else 1  # a static batch of 1 runs face by face
        y = np.concatenate([run_bound(self.session, {"target": x[i:i + step], "source": latents[i:i + step]},
                                      self.output)
                            for i in range(0, len(x), step)])
        return from_tensor(y, self.config.norm)
