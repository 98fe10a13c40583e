"""Pixel boost (--pixel-boost): align at k·128, generate k² interleaved sub-images, interleave back.

An identity stand-in must give the target back through the boosted path; stand-ins that
invert or shift their input prove where each pixel goes (an interleave that is consistent
but wrong would still round-trip an identity); a call counter proves the k² sub-images of
a face go to the generator in one call when the graph takes a batch, and in k² otherwise.
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

import standins
from conftest import PHOTOS, assert_clean_failure, run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("boost_standins")
    return {
        "identity": standins.generator(d / "inswapper_identity.onnx", 128),
        "mixing": standins.generator(d / "inswapper_flatten.onnx", 128, pin_batch="flatten", source_term=1.0),
        "invert": standins.op_generator(d / "inswapper_invert.onnx", 128, "invert"),
        "shift": standins.op_generator(d / "inswapper_shift.onnx", 128, "shift", batch=None),
        "gen256": standins.generator(d / "family256.onnx", 256, emap=False),
        "embedder": standins.embedder(d / "embedder.onnx"),
    }


@pytest.fixture(scope="module")
def big_face():
    """yaoming at 3x: a ~315-px face, where a 128-px crop throws detail away."""
    image = cv2.imread(str(PHOTOS["yaoming"]))
    return cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)


def _inswapper(path, boost=None):
    from swapcli.analyse.embedders import OnnxArcFace
    from swapcli.swap.onnx_family import GeneratorConfig, OnnxGenerator

    embedder = OnnxArcFace(path.parent / "embedder.onnx", "cpu")
    engine = OnnxGenerator(GeneratorConfig("inswapper", "arcface_128", 128, "unit"), path, embedder, device="cpu")
    engine.set_pixel_boost(boost)
    return engine


def _face_mask(analyser, image):
    face = max(analyser.detect(image), key=lambda f: f.area)
    mask = np.zeros(image.shape[:2], np.uint8)
    pts = analyser.landmarks(image, face)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts.astype(np.int32)), 1)
    return face, mask


def _one_face(swapper, image):
    face = max(swapper.detect(image), key=lambda f: f.area)
    swapper.landmarks(image, face)
    return face


# --- the interleave --------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3, 4])
def test_split_deals_pixel_y_x_to_sub_image_y_mod_k_x_mod_k(k):
    from swapcli.swap.pixel_boost import merge, split

    s = 5
    crops = np.random.default_rng(k).integers(0, 256, (2, k * s, k * s, 3), dtype=np.uint8)
    subs = split(crops, k)
    assert subs.shape == (2 * k * k, s, s, 3)
    for b, y, x in [(0, 0, 0), (1, k * s - 1, 1), (0, 7, k * s - 2), (1, 3, 4)]:
        i, j = y % k, x % k
        np.testing.assert_array_equal(subs[b * k * k + i * k + j, y // k, x // k], crops[b, y, x])
    np.testing.assert_array_equal(subs[0], crops[0, ::k, ::k])  # sub-image (0, 0): every k-th pixel
    np.testing.assert_array_equal(subs[1], crops[0, ::k, 1::k])  # (0, 1): one column on
    np.testing.assert_array_equal(merge(subs, k), crops)


def test_allowed_boosts_depend_on_the_model_size():
    from swapcli.core.errors import UsageError
    from swapcli.swap.pixel_boost import factor

    assert [factor(b, 128, "inswapper") for b in (None, 128, 256, 384, 512)] == [1, 1, 2, 3, 4]
    assert factor(512, 256, "hyperswap") == 2
    with pytest.raises(UsageError, match=r"--pixel-boost 384: hyperswap generates 256-px faces; choose 256, 512"):
        factor(384, 256, "hyperswap")
    with pytest.raises(UsageError, match="choose 256, 512"):
        factor(128, 256, "hyperswap")


# --- through the engine ----------------------------------------------------------------------

def test_invert_standin_equals_the_op_on_the_full_resolution_crop(models, swapper):
    """Pointwise op: the boosted result is the op applied to the 512-px crop, pixel for pixel."""
    from swapcli.core.templates import warp_crop

    engine = _inswapper(models["invert"], 512)
    frame = cv2.imread(str(PHOTOS["yaoming"]))
    result = engine.swap(frame, _one_face(swapper, frame), swapper.load_sources([PHOTOS["gdp"]]))
    crop = warp_crop(frame, result.matrix, 512).astype(np.float32)
    assert result.crop.shape == (512, 512, 3) and result.info["pixel_boost"] == 512
    np.testing.assert_allclose(result.crop, 255.0 - crop, atol=1e-3)


@pytest.mark.parametrize("boost", [128, 256, 384, 512])
def test_shift_standin_moves_k_crop_pixels(models, swapper, boost):
    """One pixel right in every sub-image is k pixels right in the interleaved crop (and
    not down: a row/column mix-up in the interleave shows here)."""
    from swapcli.core.templates import warp_crop

    k = boost // 128
    engine = _inswapper(models["shift"], boost)
    frame = cv2.imread(str(PHOTOS["yaoming"]))
    result = engine.swap(frame, _one_face(swapper, frame), swapper.load_sources([PHOTOS["gdp"]]))
    crop = warp_crop(frame, result.matrix, boost).astype(np.float32)
    np.testing.assert_allclose(result.crop[:, k:], crop[:, :-k], atol=1e-3)
    np.testing.assert_allclose(result.crop[:, :k], crop[:, :k], atol=1e-3)  # the repeated edge column


@pytest.mark.parametrize("boost", [256, 384, 512])
def test_identity_standin_round_trips_a_large_face(models, analyser, big_face, boost):
    from swapcli.pipeline.swapper import Swapper

    swapper = Swapper()  # its own: the engine is swapped for stand-ins below (the shared one must stay morph)
    frame = big_face.copy()
    face, mask = _face_mask(analyser, big_face)
    base = _inswapper(models["identity"])
    swapper.engine = base
    sources = swapper.load_sources([PHOTOS["gdp"]])
    plain = big_face.copy()
    swapper.swap_face(plain, _one_face(swapper, plain), sources)
    swapper.engine = _inswapper(models["identity"], boost)
    swapper.swap_face(frame, _one_face(swapper, frame), sources)
    value, at_128 = standins.psnr(frame, big_face, mask), standins.psnr(plain, big_face, mask)
    print(f"PSNR pixel boost {boost}: {value:.2f} dB (128: {at_128:.2f} dB) over {int(mask.sum())} face pixels")
    assert value >= 35.0 and value > at_128


class _Calls:
    """Wraps core.onnx.run_bound: the batch of every generator call."""

    def __init__(self, monkeypatch):
        import swapcli.core.onnx as onnx_mod

        self.batches: list[int] = []
        real = onnx_mod.run_bound

        def counted(session, feeds, output):
            self.batches.append(int(feeds["target"].shape[0]))
            return real(session, feeds, output)

        monkeypatch.setattr(onnx_mod, "run_bound", counted)


@pytest.mark.parametrize("boost,faces,batches", [(512, 1, [16]), (512, 3, [32, 16]), (384, 3, [27]),
                                                 (256, 1, [4])])
def test_a_batching_graph_takes_a_face_in_one_call(models, swapper, monkeypatch, boost, faces, batches):
    engine = _inswapper(models["identity"], boost)
    assert engine.batched  # inswapper's static batch of 1, rewritten
    frame = cv2.imread(str(PHOTOS["yaoming"]))
    face = _one_face(swapper, frame)
    sources = swapper.load_sources([PHOTOS["gdp"]])
    engine.latent(sources)
    calls = _Calls(monkeypatch)
    results = engine.swap_batch([(frame, face, sources)] * faces)
    assert calls.batches == batches and len(results) == faces


def test_a_graph_that_cannot_batch_takes_k2_calls_and_says_so(models, swapper, monkeypatch, caplog):
    monkeypatch.setattr(logging.getLogger("swapcli"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="swapcli")
    engine = _inswapper(models["mixing"], 512)
    assert not engine.batched  # the rewrite cannot fix this graph: face by face
    assert "each face takes 16 generator calls" in caplog.text
    frame = cv2.imread(str(PHOTOS["yaoming"]))
    calls = _Calls(monkeypatch)
    engine.swap(frame, _one_face(swapper, frame), swapper.load_sources([PHOTOS["gdp"]]))
    assert calls.batches == [1] * 16


def test_ghost_at_256_boosts_by_two(analyser):
    torch = pytest.importorskip("torch")

    from swapcli.pipeline.swapper import Swapper

    swapper = Swapper()  # its own: the engine is replaced below (the shared one must stay morph)

    from swapcli.analyse.embedders import TorchArcFace
    from swapcli.swap.ghost import GhostEngine

    seen = []

    def passthrough(xt, z):
        seen.append(tuple(xt.shape))
        return xt, []

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(192, 512))
    engine = GhostEngine(passthrough, TorchArcFace(None, "cpu", module=net), device="cpu")
    engine.set_pixel_boost(512)
    swapper.engine = engine
    image = cv2.imread(str(PHOTOS["yaoming"]))
    frame = image.copy()
    swapper.swap_face(frame, _one_face(swapper, frame), swapper.load_sources([PHOTOS["gdp"]]))
    assert seen == [(4, 3, 256, 256)]
    assert standins.psnr(frame, image, _face_mask(analyser, image)[1]) > 35.0


# --- the command line ------------------------------------------------------------------------

def _cli(tmp_path, target, *args):
    out = tmp_path / "out.png"
    env = {"SWAPCLI_WEIGHTS": "", "PYTHONWARNINGS": "ignore", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_cli("image", PHOTOS["gdp"], target, *args, "-o", out, "--no-mark", "--json", cwd=tmp_path, env=env)
    return proc, out


def test_cli_pixel_boost_512_round_trips_the_target(tmp_path, models, analyser, big_face):
    target = tmp_path / "big.png"
    cv2.imwrite(str(target), big_face)
    proc, out = _cli(tmp_path, target, "--engine", "inswapper", "--model", models["identity"],
                     "--embedder-model", models["embedder"], "--pixel-boost", "512")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["faces_swapped"] == 1
    value = standins.psnr(cv2.imread(str(out)), big_face, _face_mask(analyser, big_face)[1])
    print(f"CLI PSNR pixel boost 512: {value:.2f} dB")
    assert value >= 35.0


def test_cli_pixel_boost_usage(tmp_path, models):
    proc, out = _cli(tmp_path, PHOTOS["yaoming"], "--engine", "hyperswap", "--model", models["gen256"],
                     "--embedder-model", models["embedder"], "--pixel-boost", "384")
    assert_clean_failure(proc, 2)
    assert "choose 256, 512" in proc.stderr and not out.exists()
    proc, _ = _cli(tmp_path, PHOTOS["yaoming"], "--engine", "inswapper", "--pixel-boost", "300")
    assert_clean_failure(proc, 2)
    assert "128, 256, 384, 512" in proc.stderr
    proc, out = _cli(tmp_path, PHOTOS["yaoming"], "--engine", "morph", "--pixel-boost", "512")
    assert proc.returncode == 0, proc.stderr
    assert "does not apply to the morph engine" in proc.stderr and out.exists()
