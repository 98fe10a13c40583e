"""Neural engines proved against stand-ins that honour the published interfaces.

An identity generator (returns its target input) pushed through the whole
pipeline must give back the target photo: that checks alignment, crop,
normalisation and paste-back. A constant-red generator checks colour order.
These say nothing about swap quality; no real weights exist on this machine.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import standins
from conftest import PHOTOS, assert_clean_failure, run_cli

ISOLATED = {"SWAPCLI_WEIGHTS": "", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("standins")
    return {
        "gen128": standins.generator(d / "inswapper_standin.onnx", 128),
        "red128": standins.generator(d / "inswapper_red.onnx", 128, mode="red"),
        "gen256": standins.generator(d / "family256.onnx", 256, emap=False),
        "gen256_dyn": standins.generator(d / "family256_dyn.onnx", 256, emap=False, batch=None),
        "embedder": standins.embedder(d / "embedder.onnx"),
        "converter": standins.converter(d / "converter.onnx"),
        "restorer": standins.restorer(d / "restorer.onnx", 512),
    }


def isolated_env(tmp_path) -> dict:
    return {**ISOLATED, "XDG_CACHE_HOME": str(tmp_path / "cache")}


def face_region(analyser, image: np.ndarray, all_faces: bool = True) -> np.ndarray:
    """Union of the convex hulls of every detected face's 106 landmarks."""
    mask = np.zeros(image.shape[:2], np.uint8)
    faces = analyser.detect(image)
    if not all_faces:
        faces = [max(faces, key=lambda f: f.area)]
    for face in faces:
        pts = analyser.landmarks(image, face)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts.astype(np.int32)), 1)
    return mask


def swap_cli(tmp_path, *args):
    out = tmp_path / "out.png"
    proc = run_cli("image", PHOTOS["gdp"], *args, "-o", out, "--no-mark", "--json", cwd=tmp_path,
                   env=isolated_env(tmp_path))
    return proc, out


@pytest.mark.parametrize("photo", ["t1", "yaoming"])
def test_inswapper_identity_standin_reproduces_target(tmp_path, models, analyser, photo):
    target = PHOTOS[photo]
    proc, out = swap_cli(tmp_path, target, "--faces", "all", "--engine", "inswapper",
                         "--model", models["gen128"], "--embedder-model", models["embedder"])
    assert proc.returncode == 0, proc.stderr
    assert "UNVERIFIED" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["engine"] == "inswapper" and report["faces_swapped"] >= 1
    original = cv2.imread(str(target))
    result = cv2.imread(str(out))
    region = face_region(analyser, original)
    value = standins.psnr(result, original, region)
    print(f"PSNR {photo}: {value:.2f} dB over {int(region.sum())} face pixels")
    assert value > 35.0


def test_colour_order_red_standin(tmp_path, models, analyser):
    proc, out = swap_cli(tmp_path, PHOTOS["yaoming"], "--engine", "inswapper",
                         "--model", models["red128"], "--embedder-model", models["embedder"])
    assert proc.returncode == 0, proc.stderr
    result = cv2.imread(str(out)).astype(np.float32)
    face = analyser.detect(cv2.imread(str(PHOTOS["yaoming"])))[0]
    nose = face.kps[2].astype(int)
    b, g, r = result[nose[1] - 3:nose[1] + 4, nose[0] - 3:nose[0] + 4].reshape(-1, 3).mean(0)
    assert r > 240 and g < 15 and b < 15, (b, g, r)


def test_inswapper_refuses_the_mobilefacenet(tmp_path, models):
    from swapcli.models.locate import locate

    mbf = locate("w600k_mbf").path
    proc, out = swap_cli(tmp_path, PHOTOS["yaoming"], "--engine", "inswapper", "--model", models["gen128"],
                         "--embedder-model", mbf)
    assert_clean_failure(proc, 4)
    assert "w600k_r50" in proc.stderr and not out.exists()


def test_missing_generator_is_a_clear_exit_4(tmp_path):
    proc, out = swap_cli(tmp_path, PHOTOS["yaoming"], "--engine", "inswapper")
    assert_clean_failure(proc, 4)
    assert "swapcli models download" in proc.stderr and not out.exists()


def test_auto_without_models_uses_the_embedded_engine(tmp_path):
    proc, _ = swap_cli(tmp_path, PHOTOS["yaoming"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["engine"] == "morph"


def test_model_flags_need_an_engine_and_mix_needs_embeddings(tmp_path, models):
    proc, _ = swap_cli(tmp_path, PHOTOS["yaoming"], "--model", models["gen128"])
    assert_clean_failure(proc, 2)
    proc, _ = swap_cli(tmp_path, PHOTOS["yaoming"], "--engine", "morph", "--mix", "0.5")
    assert_clean_failure(proc, 2)


def test_cuda_asked_for_on_a_cpu_machine_fails_loudly(tmp_path, models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    proc, out = swap_cli(tmp_path, PHOTOS["yaoming"], "--engine", "inswapper", "--device", "cuda",
                         "--model", models["gen128"], "--embedder-model", models["embedder"])
    assert_clean_failure(proc, 4)
    assert "cuda" in proc.stderr.lower() and not out.exists()


def test_enhance_stage_with_identity_restorer_keeps_the_face(tmp_path, models, analyser):
    proc, out = swap_cli(tmp_path, PHOTOS["yaoming"], "--engine", "inswapper", "--model", models["gen128"],
                         "--embedder-model", models["embedder"], "--enhance", models["restorer"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "enhance" in report["timings_ms"]
    original = cv2.imread(str(PHOTOS["yaoming"]))
    value = standins.psnr(cv2.imread(str(out)), original, face_region(analyser, original))
    assert value > 33.0, value


# --- API level: the 256-px family and its normalisations -----------------------------------

def _engine(models, engine: str, template: str, norm: str, gen="gen256", converter=False):
    from swapcli.analyse.embedders import OnnxArcFace, OnnxConverter
    from swapcli.swap.onnx_family import GeneratorConfig, OnnxGenerator

    conv = OnnxConverter(models["converter"], "cpu") if converter else None
    return OnnxGenerator(GeneratorConfig(engine, template, 256, norm), models[gen],
                         OnnxArcFace(models["embedder"], "cpu"), conv, device="cpu")


def _swap_once(engine, photo="yaoming"):
    from swapcli.pipeline.swapper import Swapper

    swapper = Swapper()
    swapper.engine = engine
    sources = swapper.load_sources([PHOTOS["gdp"]])
    image = cv2.imread(str(PHOTOS[photo]))
    frame = image.copy()
    face = max(swapper.detect(frame), key=lambda f: f.area)
    swapper.landmarks(image, face)
    swapper.swap_face(frame, face, sources)
    return image, frame


@pytest.mark.parametrize("engine,template,norm,converter", [
    ("hyperswap", "arcface_128", "tanh", False),
    ("ghost_onnx", "arcface_112_v1", "tanh", True),
    ("simswap", "arcface_112_v1", "imagenet", True),
])
def test_family_256_identity_standins(models, analyser, engine, template, norm, converter):
    image, frame = _swap_once(_engine(models, engine, template, norm, converter=converter))
    value = standins.psnr(frame, image, face_region(analyser, image, all_faces=False))
    print(f"PSNR {engine} 256: {value:.2f} dB")
    assert value > 35.0


def test_dynamic_batch_matches_one_by_one(models):
    engine = _engine(models, "hyperswap", "arcface_128", "tanh", gen="gen256_dyn")
    assert engine.batched
    crops = np.random.default_rng(0).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    latents = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    together = engine.generate(crops, latents)
    apart = np.concatenate([engine.generate(crops[i:i + 1], latents[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, apart, atol=1e-4)


def test_inswapper_latent_is_normed_embedding_times_emap(models):
    import onnx
    from onnx import numpy_helper

    from swapcli.pipeline.swapper import Swapper
    from swapcli.swap.engines import create_engine
    from swapcli.core.options import EngineOptions

    engine = create_engine(EngineOptions(engine="inswapper", model=str(models["gen128"]),
                                         embedder_model=str(models["embedder"]), device="cpu"))
    sources = Swapper().load_sources([PHOTOS["gdp"]])
    raw = engine.embedder.embed(sources[0].image, sources[0].face.kps)
    emap = numpy_helper.to_array(onnx.load(str(models["gen128"])).graph.initializer[-1])
    expected = (raw / np.linalg.norm(raw)) @ emap
    np.testing.assert_allclose(engine.latent(sources), expected / np.linalg.norm(expected), atol=1e-5)


def test_slerp_mix_of_identities():
    from swapcli.swap.identity import combine

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(512) * 20, rng.standard_normal(512) * 24
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    np.testing.assert_allclose(unit(combine([a, b], 0.0)), unit(a), atol=1e-6)
    np.testing.assert_allclose(unit(combine([a, b], 1.0)), unit(b), atol=1e-6)
    half = unit(combine([a, b], 0.5))
    assert abs(half @ unit(a) - half @ unit(b)) < 1e-6  # equal angles to both
    assert half @ unit(a) > unit(a) @ unit(b)  # on the arc between them
    assert np.isclose(np.linalg.norm(combine([a, b], 0.3)), (np.linalg.norm(a) + np.linalg.norm(b)) / 2)


def test_mix_changes_the_latent_smoothly(models):
    from swapcli.core.options import EngineOptions
    from swapcli.pipeline.swapper import Swapper
    from swapcli.swap.engines import create_engine

    sources = Swapper().load_sources([PHOTOS["gdp"], PHOTOS["yaoming"]])
    lat = {}
    for t in (0.0, 0.5, 1.0):
        engine = create_engine(EngineOptions(engine="hyperswap", model=str(models["gen256"]),
                                             embedder_model=str(models["embedder"]), device="cpu", mix=t))
        lat[t] = engine.latent(sources)
        single = engine.raw_identity(sources[:1])
    assert np.allclose(lat[0.0], single / np.linalg.norm(single), atol=1e-5)
    assert lat[0.5] @ lat[0.0] > lat[1.0] @ lat[0.0]
    assert np.isclose(lat[0.5] @ lat[0.0], lat[0.5] @ lat[1.0], atol=1e-5)


def _tiny_torch_embedder():
    import torch

    from swapcli.analyse.embedders import TorchArcFace

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(192, 512))
    return TorchArcFace(None, "cpu", module=net)


def test_ghost_tanh_convention_with_a_passthrough_generator(analyser):
    import torch

    from swapcli.swap.ghost import GhostEngine

    class Passthrough(torch.nn.Module):
        def forward(self, xt, z_id):
            assert xt.shape[1:] == (3, 256, 256) and z_id.shape[1:] == (512,)
            assert -1.0 <= float(xt.min()) and float(xt.max()) <= 1.0
            return xt, []

    image, frame = _swap_once(GhostEngine(Passthrough(), _tiny_torch_embedder(), device="cpu"))
    value = standins.psnr(frame, image, face_region(analyser, image, all_faces=False))
    print(f"PSNR ghost (torch, [-1,1]) 256: {value:.2f} dB")
    assert value > 35.0


def test_ghost_embedding_is_fed_unnormalised():
    from swapcli.pipeline.swapper import Swapper
    from swapcli.swap.ghost import GhostEngine

    embedder = _tiny_torch_embedder()
    engine = GhostEngine(lambda x, z: (x, []), embedder, device="cpu")
    sources = Swapper().load_sources([PHOTOS["gdp"]])
    raw = embedder.embed(sources[0].image, sources[0].face.kps)
    np.testing.assert_allclose(engine.latent(sources), raw, rtol=1e-5)


@pytest.mark.parametrize("engine,side", [("blendswap", 112), ("uniface", 256)])
def test_image_driven_engines_get_the_aligned_source_photo(tmp_path, analyser, engine, side):
    from swapcli.pipeline.swapper import Swapper
    from swapcli.swap.onnx_family import GeneratorConfig, OnnxGenerator

    path = standins.generator(tmp_path / f"{engine}.onnx", 256, emap=False, source_shape=(1, 3, side, side))
    gen = OnnxGenerator(GeneratorConfig(engine, "ffhq_512", 256, "unit" if engine == "blendswap" else "tanh"),
                        path, device="cpu")
    sources = Swapper().load_sources([PHOTOS["gdp"]])
    latent = gen.latent(sources)
    assert latent.shape == (3, side, side) and 0.0 <= latent.min() and latent.max() <= 1.0
    # the crop is the source face: detecting on it finds one face filling the crop
    crop = (latent.transpose(1, 2, 0)[..., ::-1] * 255).astype(np.uint8)
    padded = cv2.copyMakeBorder(crop, side // 2, side // 2, side // 2, side // 2, cv2.BORDER_CONSTANT)
    assert len(analyser.detect(padded)) == 1
    image, frame = _swap_once(gen)
    assert standins.psnr(frame, image, face_region(analyser, image, all_faces=False)) > 35.0
    with pytest.raises(Exception, match="--mix"):
        OnnxGenerator(GeneratorConfig(engine, "ffhq_512", 256, "unit"), path, device="cpu", mix=0.5)
