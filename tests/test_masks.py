"""--mask contracts, measured in frame pixels with stand-ins that have the published interfaces.

A red generator (inswapper's I/O) paints every pasted pixel pure red, so what a mask lets through
is visible exactly: red where pasted, the target's own pixels where not. Crop-space masks are
made on the target's arcface_128 crop at 256 px; each test maps frame pixels into that crop and
checks the two sides of every boundary, leaving out the feather (facefusion's sigma 5 blur and
[0.5, 1] stretch feather inwards over ~3 sigma = 16 crop px; the engine's footprint edge ~20).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import standins
from conftest import PHOTOS, assert_clean_failure, run_cli

ISOLATED = {"SWAPCLI_WEIGHTS": "", "PYTHONWARNINGS": "ignore"}
FEATHER = 16  # crop px (256-crop) over which a stretched mask rises from 0 to 1
FOOT = 24  # crop px: inside this margin the generator's footprint is 1
PHOTO = "yaoming"
# Parser stand-in classes on its 512 crop: left half skin, top-right hair, bottom-right nose.
CLASSES = np.zeros((32, 32), np.int64)
CLASSES[:, :16], CLASSES[:16, 16:], CLASSES[16:, 16:] = 1, 17, 10


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mask_standins")
    return {
        "red": standins.generator(d / "red.onnx", 128, mode="red"),
        "identity": standins.generator(d / "identity.onnx", 128),
        "embedder": standins.embedder(d / "embedder.onnx"),
        "occluder": standins.occluder(d / "occluder.onnx"),
        "occluder_nchw": standins.occluder(d / "occluder_nchw.onnx", layout="nchw"),
        "parser": standins.parser(d / "parser.onnx", CLASSES),
    }


@pytest.fixture(scope="module")
def target(analyser):
    image = cv2.imread(str(PHOTOS[PHOTO]))
    face = analyser.detect(image)[0]
    analyser.landmarks(image, face)
    return image, face


def swap(tmp_path, models, *args, generator="red", name="out.png"):
    out = tmp_path / name
    proc = run_cli("image", PHOTOS["gdp"], PHOTOS[PHOTO], "-o", out, "--no-mark", "--json", "--engine", "inswapper",
                   "--model", models[generator], "--embedder-model", models["embedder"], *args, cwd=tmp_path,
                   env={**ISOLATED, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    return cv2.imread(str(out)), proc


def crop_coords(face, shape) -> np.ndarray:
    """(H, W, 2) position of every frame pixel in the target's arcface_128 crop at 256 px."""
    from swapcli.core.templates import align_matrix

    m = align_matrix(face.kps, "arcface_128", 256)
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return np.dstack([m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]])


def untouched(result, original, where) -> int:
    assert where.sum() > 200, "too few pixels to measure"
    return int(np.abs(result.astype(int) - original)[where].max())


def red_share(result, where) -> float:
    assert where.sum() > 200, "too few pixels to measure"
    px = result[where].astype(int)
    return float(((px[:, 2] > 245) & (px[:, 1] < 10) & (px[:, 0] < 10)).mean())


def inside(uv, margin: float) -> np.ndarray:
    return (uv[..., 0] >= margin) & (uv[..., 0] <= 256 - margin) & (uv[..., 1] >= margin) & (uv[..., 1] <= 256 - margin)


@pytest.mark.parametrize("paste", ["cv2", "torch"])
def test_occluder_hidden_quarter_stays_the_target(tmp_path, models, target, paste):
    if paste == "torch":
        pytest.importorskip("torch")
    original, face = target
    result, proc = swap(tmp_path, models, "--mask", "occlusion", "--occluder-model", models["occluder"],
                        "--paste", paste)
    assert "UNVERIFIED" in proc.stderr and "occluder" in proc.stderr
    uv = crop_coords(face, original.shape)
    u, v = uv[..., 0], uv[..., 1]
    # The blur rounds the hidden quarter's inner corner (the visible side is not convex there).
    hidden = inside(uv, 1) & (u < 128 - 1) & (v > 128 + 1) & ~((u > 128 - FEATHER) & (v < 128 + FEATHER))
    shown = inside(uv, FOOT) & ((u > 128 + FEATHER) | (v < 128 - FEATHER))
    assert untouched(result, original, hidden) <= 1
    assert red_share(result, shown) == 1.0
    assert json.loads(proc.stdout)["faces"][0]["masks"] == ["occlusion:occluder"]


def test_parser_keeps_exactly_the_chosen_regions(tmp_path, models, target):
    original, face = target
    uv = crop_coords(face, original.shape)
    u, v = uv[..., 0], uv[..., 1]
    skin, _ = swap(tmp_path, models, "--mask", "region", "--mask-regions", "skin", "--parser-model", models["parser"])
    assert red_share(skin, inside(uv, FOOT) & (u < 128 - FEATHER)) == 1.0
    assert untouched(skin, original, inside(uv, 1) & (u > 128 + 1)) <= 1
    nose, _ = swap(tmp_path, models, "--mask", "region", "--mask-regions", "nose", "--parser-model", models["parser"],
                   name="nose.png")
    assert red_share(nose, inside(uv, FOOT) & (u > 128 + FEATHER) & (v > 128 + FEATHER)) == 1.0
    assert untouched(nose, original, inside(uv, 1) & ((u < 128 - 1) | (v < 128 - 1))) <= 1


def test_area_mask_keeps_exactly_its_landmark_hull(tmp_path, models, target):
    from swapcli.blend.masks import AREAS
    from swapcli.core.geometry import apply
    from swapcli.core.templates import align_matrix

    original, face = target
    result, _ = swap(tmp_path, models, "--mask", "area", "--mask-areas", "lower-face")
    uv = crop_coords(face, original.shape)
    hull = cv2.convexHull(apply(align_matrix(face.kps, "arcface_128", 256), face.landmarks)[list(AREAS["lower-face"])]
                          .astype(np.float32))
    ys, xs = np.nonzero(inside(uv, 0))
    dist = np.full(original.shape[:2], -1e9)
    dist[ys, xs] = [cv2.pointPolygonTest(hull, (float(a), float(b)), True) for a, b in uv[ys, xs]]
    assert red_share(result, inside(uv, FOOT) & (dist > FEATHER)) == 1.0
    assert untouched(result, original, inside(uv, 0) & (dist < -1.5)) <= 1


def test_mouth_mask_keeps_the_targets_mouth(tmp_path, models, target):
    from swapcli.analyse.face import MOUTH

    original, face = target
    hull = np.zeros(original.shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(face.landmarks[MOUTH]).astype(np.int32)), 1)
    mouth = hull.astype(bool)
    kept, _ = swap(tmp_path, models, "--mask", "box", "--mouth-mask")
    pasted, _ = swap(tmp_path, models, "--mask", "box", name="box.png")
    assert red_share(pasted, mouth) == 1.0  # without --mouth-mask the box pastes over the mouth
    assert untouched(kept, original, mouth) <= 1
    uv = crop_coords(face, original.shape)
    far = cv2.dilate(hull, np.ones((41, 41), np.uint8)) == 0
    assert red_share(kept, inside(uv, 64) & far) == 1.0  # the rest of the box is still pasted


def test_channels_first_model_as_occluder_fails_loudly(tmp_path, models):
    proc = run_cli("image", PHOTOS["gdp"], PHOTOS[PHOTO], "-o", tmp_path / "x.png", "--no-mark",
                   "--mask", "occlusion", "--occluder-model", models["occluder_nchw"], cwd=tmp_path,
                   env={**ISOLATED, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_clean_failure(proc, 4)
    assert "[1, 3, 256, 256]" in proc.stderr and "channels last" in proc.stderr
    proc = run_cli("image", PHOTOS["gdp"], PHOTOS[PHOTO], "-o", tmp_path / "x.png", "--no-mark",
                   "--parser-model", models["occluder"], cwd=tmp_path,
                   env={**ISOLATED, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_clean_failure(proc, 4)
    assert "parser" in proc.stderr and not (tmp_path / "x.png").exists()


def test_bad_mask_names_are_usage_errors(tmp_path):
    for args in (["--mask", "face"], ["--mask-regions", "hair"], ["--mask-areas", "chin"]):
        proc = run_cli("image", PHOTOS["gdp"], PHOTOS[PHOTO], "-o", tmp_path / "x.png", *args, cwd=tmp_path)
        assert_clean_failure(proc, 2)


def test_explicit_occlusion_falls_back_and_says_so(tmp_path):
    env = {**ISOLATED, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    outs = {}
    for name, args in (("default", []), ("explicit", ["--mask", "ghost,occlusion"])):
        outs[name] = tmp_path / f"{name}.png"
        proc = run_cli("image", PHOTOS["gdp"], PHOTOS[PHOTO], "-o", outs[name], "--no-mark", *args, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        assert ("offline estimate" in proc.stderr) == (name == "explicit")
    # the default set is ghost + the offline occlusion, pixel for pixel
    assert np.array_equal(cv2.imread(str(outs["default"])), cv2.imread(str(outs["explicit"])))


def test_plan_parsing_and_implied_types():
    from swapcli.blend.masks import DEFAULT_MASKS, REGIONS, plan_masks
    from swapcli.core.errors import UsageError

    assert plan_masks().masks == DEFAULT_MASKS and plan_masks().default
    assert plan_masks(occlusion=False).masks == ("ghost",)
    p = plan_masks(["box,occlusion", "box"])
    assert p.masks == ("box", "occlusion") and p.explicit and not p.default
    assert plan_masks(regions=["skin,nose"]).masks == (*DEFAULT_MASKS, "region")
    assert plan_masks(regions=["skin,nose"]).regions == ("skin", "nose")
    assert plan_masks(["box"], areas=["mouth"], occluder="many").masks == ("box", "area", "occlusion")
    assert plan_masks().regions == tuple(REGIONS)
    with pytest.raises(UsageError):
        plan_masks(["ghost", "hair"])


def test_masks_batch_over_frames_like_one_by_one(tmp_path, models, analyser):
    """The occluder (published batch of 1) is rewritten to batch; the faces of several frames in
    one call give the same masks as one at a time."""
    from swapcli.blend.masks import Masker, plan_masks

    frames = [cv2.imread(str(PHOTOS[p])) for p in ("yaoming", "t1")]
    items = []
    for frame in frames:
        for face in analyser.detect(frame):
            analyser.landmarks(frame, face)
            x0, y0, x1, y1 = face.bbox.astype(int)
            items.append((frame, face, (max(0, x0 - 20), max(0, y0 - 20), x1 + 20, y1 + 20)))
    masker = Masker(plan_masks(["occlusion", "area", "region", "box"], occluder=str(models["occluder"]),
                               parser=str(models["parser"]), mouth=True), device="cpu")
    assert masker.occluders[0].batched and masker.parser.batched
    together = masker.compute(items)
    for item, mask in zip(items, together):
        alone = masker.compute([item])[0]
        assert mask.visible.shape == (item[2][3] - item[2][1], item[2][2] - item[2][0])
        assert np.abs(mask.visible - alone.visible).max() < 1e-5


def test_registry_rows():
    from swapcli.models.registry import MODELS

    for name in ("xseg_1", "xseg_2", "xseg_3"):
        spec = MODELS[name]
        assert spec.kind == "occluder" and spec.licence.startswith("GPL-3.0") and spec.input_size == 256
        assert spec.urls[0].startswith("https://github.com/facefusion/facefusion-assets/releases/download/models-3.")
    for name in ("bisenet_resnet_18", "bisenet_resnet_34"):
        spec = MODELS[name]
        assert spec.kind == "parser" and spec.licence.startswith("MIT") and spec.norm == "imagenet"
        assert spec.urls[0].endswith(f"/{name}.onnx")
