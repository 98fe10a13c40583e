"""Engine names the CLI accepts, and how each is built from its model files.

Model files come from the registry (verified by hash) or, with --model /
--embedder-model, from the user (loaded unverified, and said so). `auto`
takes the first engine of AUTO_ORDER whose files are all installed and
verified, else the embedded morph, which needs no files at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from swapcli.core.errors import ModelError, UsageError
from swapcli.core.options import EngineOptions
from swapcli.models.registry import MODELS, ModelSpec
from swapcli.swap.base import SwapEngine
from swapcli.swap.onnx_family import DEFAULT_MODELS, LATENT_RULES

log = logging.getLogger("swapcli")

GHOST_DEFAULT = "ghost_unet_2blocks"
NEURAL_ENGINES = ("ghost", *LATENT_RULES)
ENGINE_NAMES = ("auto", "morph", *NEURAL_ENGINES)
AUTO_ORDER = ("hyperswap", "inswapper", "ghost", "simswap", "ghost_onnx")  # sharpest, most faithful first
EMBEDDED_EMBEDDER = "w600k_mbf"  # the MobileFaceNet in the wheel: a different space from w600k_r50


@dataclass(frozen=True)
class EngineFiles:
    spec: ModelSpec
    generator: Path
    embedder: Path | None
    converter: Path | None
    verified: bool


def default_model(engine: str) -> str:
    return GHOST_DEFAULT if engine == "ghost" else DEFAULT_MODELS[engine]


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelError(f"model '{name}' is not in the registry")
    return MODELS[name]


def _require(name: str, weights_dir: str | None, engine: str) -> Path:
    from swapcli.models.locate import locate

    try:
        return locate(name, weights_dir).path
    except ModelError as exc:
        raise ModelError(f"engine '{engine}' needs model '{name}': {exc}") from exc


def _user_file(path: str, what: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{what} file not found: {file}")
    log.warning("loading your own %s %s UNVERIFIED (no registry hash)", what, file)
    return file


def split_engine(name: str) -> tuple[str, str]:
    """--engine takes an engine (its default model) or a registry generator name (that variant)."""
    spec = MODELS.get(name)
    if spec is not None and spec.kind == "generator" and spec.engine:
        return spec.engine, name
    return name, default_model(name)


def resolve_files(engine: str, options: EngineOptions, model_name: str | None = None) -> EngineFiles:
    """The generator, embedder and converter files an engine will load."""
    spec = _spec(model_name or default_model(engine))
    wd = options.weights_dir
    generator = _user_file(options.model, "generator") if options.model else _require(spec.name, wd, engine)
    embedder = None
    if spec.source != "image":
        embedder_name = spec.embedder or ""
        if options.embedder_model:
            embedder = _user_file(options.embedder_model, "embedder")
            if engine != "ghost":
                _refuse_mobilefacenet(embedder, engine)
        else:
            if embedder_name == EMBEDDED_EMBEDDER:
                raise ModelError(f"registry error: {engine} cannot use the MobileFaceNet embedder")
            embedder = _require(embedder_name, wd, engine)
    converter = _require(spec.converter, wd, engine) if spec.converter else None
    return EngineFiles(spec, generator, embedder, converter, verified=not (options.model or options.embedder_model))


def _refuse_mobilefacenet(path: Path, engine: str) -> None:
    """inswapper & co. were trained on w600k_r50 latents; the wheel's MobileFaceNet
    embeds into another space, so the swap would silently lose the identity."""
    from swapcli.models.locate import sha256_file

    mbf = MODELS[EMBEDDED_EMBEDDER]
    if path.stat().st_size == mbf.size and sha256_file(path) == mbf.sha256:
        raise ModelError(f"engine '{engine}' needs the w600k_r50 ArcFace (buffalo_l), not the packaged "
                         "MobileFaceNet (a different embedding space); run `swapcli models download w600k_r50`")


def auto_engine(options: EngineOptions) -> str:
    """The first engine of AUTO_ORDER whose registry files are all installed, else morph."""
    from swapcli.models.locate import is_installed

    for engine in AUTO_ORDER:
        spec = MODELS.get(default_model(engine))
        if spec is None:
            continue
        needed = [spec.name, *(n for n in (spec.embedder, spec.converter) if n)]
        if engine == "ghost":
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                continue
        if all(is_installed(n, options.weights_dir) for n in needed):
            return engine
    return "morph"


def create_engine(options: EngineOptions) -> SwapEngine:
    name = options.engine
    model_name = None
    if name not in ENGINE_NAMES:
        spec = MODELS.get(name)
        if spec is None or spec.kind != "generator":
            raise UsageError(f"unknown engine '{name}' (choose from {', '.join(ENGINE_NAMES)}, "
                             "or a generator listed by `swapcli models list`)")
        name, model_name = split_engine(name)
    if name == "auto":
        if options.model or options.embedder_model:
            raise UsageError("--model/--embedder-model need an explicit --engine (which interface the file has)")
        name = auto_engine(options)
        log.debug("--engine auto chose %s", name)
    if name == "morph":
        if options.model or options.embedder_model:
            raise UsageError("the morph engine loads no model files; drop --model/--embedder-model")
        if options.mix is not None:
            raise UsageError("--mix blends identity embeddings; it needs a neural --engine, not morph")
        from swapcli.swap.morph import MorphEngine

        if options.pixel_boost is not None:  # morph renders at frame resolution: there is nothing to boost
            log.warning("--pixel-boost does not apply to the morph engine (it works at frame resolution); ignored")
        return MorphEngine(colour=options.colour)
    files = resolve_files(name, options, model_name)
    if files.spec.input_size and not options.model:  # a bad --pixel-boost fails before the model loads
        from swapcli.swap.pixel_boost import factor

        factor(options.pixel_boost, files.spec.input_size, name)
    engine = _neural_engine(name, options, files)
    engine.set_pixel_boost(options.pixel_boost)  # checked again on the graph's own input side
    return engine


def _neural_engine(name: str, options: EngineOptions, files: EngineFiles):
    if name == "ghost":
        from swapcli.analyse.embedders import TorchArcFace
        from swapcli.swap.ghost import GhostEngine

        return GhostEngine(files.generator, TorchArcFace(files.embedder, options.device), options.device, options.mix)
    from swapcli.analyse.embedders import OnnxArcFace, OnnxConverter
    from swapcli.swap.onnx_family import GeneratorConfig, OnnxGenerator

    spec = files.spec
    config = GeneratorConfig(name, spec.template or "arcface_128", spec.input_size or 128, spec.norm or "unit")
    embedder = OnnxArcFace(files.embedder, options.device, options.session_threads) if files.embedder else None
    converter = OnnxConverter(files.converter, options.device, options.session_threads) if files.converter else None
    return OnnxGenerator(config, files.generator, embedder, converter, options.device, options.session_threads, options.mix)


def create_restorer(options: EngineOptions):
    """The --enhance stage: a registry restorer by name, or the user's own ONNX file (GFPGAN conventions)."""
    if not options.enhance:
        return None
    from swapcli.enhance.restore import ENHANCERS, Restorer

    value = options.enhance
    if value in ENHANCERS:
        spec = _spec(ENHANCERS[value])
        path = _require(spec.name, options.weights_dir, f"--enhance {value}")
        return Restorer(path, spec.template or "ffhq_512", spec.norm or "tanh", options.enhance_blend,
                        options.device, options.session_threads, name=value)
    if value.endswith(".onnx"):
        return Restorer(_user_file(value, "restorer"), amount=options.enhance_blend, device=options.device,
                        threads=options.session_threads, name=Path(value).stem)
    raise UsageError(f"--enhance takes {', '.join(ENHANCERS)} or a restorer .onnx file, not '{value}'")


def create_compositor(options: EngineOptions, engine, restorer=None):
    """Where faces are pasted back (--paste): None = cv2 on the host; else a TorchCompositor on
    the model's device. auto picks torch only when the engine runs on CUDA and torch sees it,
    since on the CPU cv2's paste is as fast and needs no tensors."""
    from swapcli.swap.crop import CropEngine

    mode = options.paste
    if mode == "cv2":
        return None
    if not isinstance(engine, CropEngine):
        if mode == "torch":
            raise UsageError(f"--paste torch needs a neural engine; {engine.name} pastes on the host")
        return None
    from swapcli.swap.torch_device import torch_device

    if mode == "auto":
        device = engine_device(engine, options.device)
        if device is None:
            return None
    else:
        device = torch_device(options.device if options.device != "auto" else "cpu")
    from swapcli.blend.torch_paste import TorchCompositor

    return TorchCompositor(device)


def engine_device(engine, device: str):
    """The torch CUDA device an engine's model runs on, or None (CPU, or torch has no CUDA)."""
    on_cuda = getattr(getattr(engine, "device", None), "type", None) == "cuda"
    session = getattr(engine, "session", None)
    if session is not None:
        on_cuda = "CUDAExecutionProvider" in session.get_providers() or \
            "TensorrtExecutionProvider" in session.get_providers()
    if not on_cuda:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = device.split(":", 1)[1] if device.startswith(("cuda:", "tensorrt:")) else "0"
    return torch.device(f"cuda:{index}")
