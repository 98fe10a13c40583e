"""One table-driven adapter for the ONNX generators: inswapper_128 and the
facefusion-converted family (hyperswap, ghost_N_256, simswap, blendswap, uniface).

They differ only in crop template and size, pixel normalisation, and how the
source identity becomes the `source` input; the registry entry gives the
first two, LATENT_RULES the third. Everything else (crop, paste-back, mask)
is shared with the other engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from swapcli.core.errors import ModelError, UsageError
from swapcli.core.templates import align_matrix, warp_crop
from swapcli.swap.base import SourceFace
from swapcli.swap.crop import CropEngine, to_tensor
from swapcli.swap.identity import normed

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


def read_emap(path: str | Path) -> np.ndarray:
    """inswapper's identity projection: the graph's last initializer, 512x512."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
        emap = numpy_helper.to_array(graph.initializer[-1])
    except Exception as exc:
        raise ModelError(f"cannot read inswapper's emap from {path}: {str(exc).splitlines()[0]}") from exc
    if emap.shape != (512, 512):
        raise ModelError(f"{path}: last initializer is {emap.shape}, not inswapper's 512x512 emap")
    return emap.astype(np.float32)


class OnnxGenerator(CropEngine):
    def __init__(self, config: GeneratorConfig, path: str | Path, embedder=None, converter=None,
                 device: str = "auto", threads: int = 0, mix: float | None = None) -> None:
        from swapcli.core.onnx import create_session

        if config.latent == "image" and mix is not None:
            raise UsageError(f"--mix needs an embedding engine; {config.engine} takes the source photo itself")
        super().__init__(embedder, mix)
        self.name = config.engine
        self.config = config
        self.template = config.template
        self.session = create_session(path, device, threads)
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"target", "source"}:
            raise ModelError(f"{Path(path).name} is not a {config.engine} generator: inputs {sorted(inputs)}, "
                             "expected 'source' and 'target'")
        shape = inputs["target"]
        self.size = shape[2] if isinstance(shape[2], int) else config.size
        self.batched = not (isinstance(shape[0], int) and shape[0] == 1)
        self.source_shape = inputs["source"]
        self.output = self.session.get_outputs()[0].name
        self.converter = converter
        self.emap = read_emap(path) if config.latent == "emap" else None
        if config.latent in ("converted", "converted_normed") and converter is None:
            raise ModelError(f"{config.engine} needs its crossface converter model")

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
        from swapcli.swap.crop import from_tensor

        x = to_tensor(crops, self.config.norm)
        latents = latents.astype(np.float32)
        if self.batched:
            y = self.session.run([self.output], {"target": x, "source": latents})[0]
        else:  # inswapper's published graph has a static batch of 1
            y = np.concatenate([self.session.run([self.output], {"target": x[i:i + 1], "source": latents[i:i + 1]})[0]
                                for i in range(len(x))])
        return from_tensor(y, self.config.norm)
