"""TorchCompositor (torch paste-back) against the cv2 path, on the CPU device, with real faces.

Tolerance (see swapcli.blend.torch_paste): same offset and MaskParams; over the
ROI mean abs diff < 0.01, 99.9th percentile <= 1, max <= 2 grey levels;
outside the ROI bit-identical. Measured: mean <= 4e-5, p99.9 0, max 1.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from swapcli.analyse.face import Face
from swapcli.blend.ghost_mask import params_for
from swapcli.blend.paste import blend
from swapcli.blend.torch_paste import TorchCompositor, hull_spans, span_morph
from swapcli.core.templates import align_matrix, warp_crop
from swapcli.swap.base import SwapResult
from swapcli.swap.crop import paste_region

MEAN_TOL, P999_TOL, MAX_TOL = 0.01, 1.0, 2

BRANCHES = {  # params_for's four rules, by their erode
    15: "narrow > 6", 10: "narrow > 3", -5: "wider < -3 (dilate)", 5: "default",
}


@pytest.fixture(scope="module")
def analysed(photos):
    from swapcli.core.options import EngineOptions
    from swapcli.pipeline.swapper import Swapper
    from swapcli.read.image import read_image

    sw = Swapper(EngineOptions(engine="morph", device="cpu"))
    out = {}
    for name in ("yaoming", "t1"):
        img = read_image(photos[name]).bgr
        faces = sw.detect(img)
        for face in faces:
            sw.landmarks(img, face)
        out[name] = (img, faces)
    return out


def moved(face: Face, factor: float, dx: float = 0.0) -> np.ndarray:
    """'Generated' landmarks: the target's scaled about their centroid (narrower < 1 < wider)."""
    lm = face.landmarks.astype(np.float64)
    c = lm.mean(0)
    return (lm - c) * factor + c + np.array([dx, 0.0])


def make_crop(img: np.ndarray, face: Face, size: int = 128, seed: int = 0):
    """A visibly different crop: mirrored left half, colour shift, sub-level noise (exercises rounding)."""
    m = align_matrix(face.kps, "arcface_128", size)
    crop = warp_crop(img, m, size).astype(np.float32)
    crop[:, : size // 2] = crop[:, : size // 2][:, ::-1]
    crop += np.array([40.0, -25.0, 10.0], np.float32)
    crop += np.random.default_rng(seed).uniform(-0.5, 0.5, crop.shape).astype(np.float32)
    return np.clip(crop, 0, 255), m


def cpu_paste(frame, crop, matrix, face, generated, params=None):
    roi, image, footprint = paste_region(crop, matrix, frame.shape)
    result = SwapResult(roi=roi, image=image, keep=1.0 - footprint)
    info = blend(frame, face, result, generated - np.array(roi[:2], np.float64), params)
    return roi, info


def scaled(img, face, k):
    """Image and face scaled k times (bigger faces take smooth_blur's downscaled path)."""
    big = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
    f = Face(bbox=face.bbox * k, score=face.score, kps=face.kps * k, landmarks=face.landmarks * k)
    return big, f


def compare(frame, face, factor, comp, *, crop_size=128, seed=0, dx=0.0):
    crop, m = make_crop(frame, face, crop_size, seed)
    generated = moved(face, factor, dx)
    ref, got = frame.copy(), frame.copy()
    roi, info = cpu_paste(ref, crop, m, face, generated)
    frame_t = comp.upload(got)
    offset, chosen = comp.paste(frame_t, crop, m, face.landmarks, generated, face.kps)
    got = comp.download(frame_t)
    assert offset == pytest.approx(info.offset, abs=1e-9)
    assert chosen == info.params
    x0, y0, x1, y1 = roi
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(got[outside], frame[outside])  # the ROI bounds every write
    d = np.abs(got[y0:y1, x0:x1].astype(np.int16) - ref[y0:y1, x0:x1].astype(np.int16))
    changed = np.abs(ref[y0:y1, x0:x1].astype(np.int16) - frame[y0:y1, x0:x1]).max()
    stats = (float(d.mean()), float(np.percentile(d, 99.9)), int(d.max()))
    print(f"factor {factor} roi {x1 - x0}x{y1 - y0} {info.params} mean/p99.9/max {stats} (paste moved up to {changed})")
    assert changed > 30  # the paste is visible, so the comparison means something
    assert stats[0] < MEAN_TOL and stats[1] <= P999_TOL and stats[2] <= MAX_TOL, stats
    return chosen


@pytest.fixture(scope="module")
def comp():
    return TorchCompositor(torch.device("cpu"))


def test_matches_cv2_on_all_mask_branches(analysed, comp):
    img, faces = analysed["yaoming"]
    seen = set()
    # Offsets on this face: 0.99 -> 2.2 (default), 0.98 -> 4.3, 0.95 -> 11, 1.04 -> -8 (dilate).
    for factor in (0.99, 0.98, 0.95, 1.04):
        seen.add(compare(img, faces[0], factor, comp).erode)
    assert seen == set(BRANCHES), seen
    big, face = scaled(img, faces[0], 2.0)  # ~210 px face: the blur runs on a downscaled grid
    for factor in (0.99, 0.98, 0.95, 1.04):
        compare(big, face, factor, comp, crop_size=256)


def test_many_faces_one_frame(analysed, comp):
    img, faces = analysed["t1"]
    assert len(faces) >= 5
    ref, got = img.copy(), img.copy()
    frame_t = comp.upload(got)
    items = []
    for i, face in enumerate(faces):
        crop, m = make_crop(img, face, seed=i)
        generated = moved(face, 0.95 + 0.02 * i)
        cpu_paste(ref, crop, m, face, generated)
        items.append((crop, m, face.landmarks, generated, face.kps))
    comp.paste_many(frame_t, items)
    d = np.abs(comp.download(frame_t).astype(np.int16) - ref)
    assert d.max() <= MAX_TOL and np.percentile(d, 99.9) <= P999_TOL


def test_face_cut_by_frame_edge(analysed, comp):
    img, faces = analysed["yaoming"]
    face = faces[0]
    for cut in ("left", "top"):
        x, y = face.kps[2]
        sx, sy = (int(x) - 20, 0) if cut == "left" else (0, int(y) - 20)
        frame = np.ascontiguousarray(img[sy:, sx:])
        shift = np.array([sx, sy], np.float32)
        f = Face(bbox=face.bbox - np.tile(shift, 2), score=face.score, kps=face.kps - shift,
                 landmarks=face.landmarks - shift)
        crop, m = make_crop(img, face)
        m = m.copy()
        m[:, 2] += m[:, :2] @ shift  # the same crop, in the cut frame's pixels
        generated = moved(f, 0.93)
        ref, got = frame.copy(), frame.copy()
        roi, info = cpu_paste(ref, crop, m, f, generated)
        assert roi[0] == 0 or roi[1] == 0  # the ROI really is clipped
        frame_t = comp.upload(got)
        offset, chosen = comp.paste(frame_t, crop, m, f.landmarks, generated, f.kps)
        d = np.abs(comp.download(frame_t).astype(np.int16) - ref)
        print(f"cut {cut}: roi {roi} mean/p99.9/max {d.mean():.2e} {np.percentile(d, 99.9)} {d.max()}")
        assert chosen == info.params
        assert d.mean() < MEAN_TOL and np.percentile(d, 99.9) <= P999_TOL and d.max() <= MAX_TOL


def test_tensor_crop_equals_numpy_crop(analysed, comp):
    img, faces = analysed["yaoming"]
    crop, m = make_crop(img, faces[0])
    generated = moved(faces[0], 0.93)
    outs = []
    for c in (crop, torch.from_numpy(crop.copy())):
        frame_t = comp.upload(img.copy())
        comp.paste(frame_t, c, m, faces[0].landmarks, generated, faces[0].kps)
        outs.append(comp.download(frame_t))
    assert np.array_equal(outs[0], outs[1])


def test_upload_download_round_trip(comp):
    frame = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    t = comp.upload(frame)
    assert t.dtype == torch.uint8 and tuple(t.shape) == frame.shape and t.device.type == "cpu"
    back = comp.download(t)
    assert back.dtype == np.uint8 and np.array_equal(back, frame)


def test_full_mask_reproduces_crop(comp):
    """Translation-only matrix, hull covering the crop: the mask is 1 in the middle, so the crop shows."""
    size = 200
    frame = np.full((300, 320, 3), 90, np.uint8)
    crop = np.random.default_rng(4).integers(0, 256, (size, size, 3)).astype(np.float32)
    m = np.array([[1.0, 0.0, -60.0], [0.0, 1.0, -50.0]])  # frame -> crop
    # 106 points on a circle of radius 95 around the crop centre (frame pixels), eye points inside.
    ang = np.linspace(0, 2 * np.pi, 106, endpoint=False)
    lm = np.stack([160 + 95 * np.cos(ang), 150 + 95 * np.sin(ang)], 1)
    kps = np.array([[130, 130], [190, 130], [160, 160], [135, 190], [185, 190]], np.float64)
    frame_t = comp.upload(frame.copy())
    comp.paste(frame_t, crop, m, lm, lm, kps, params=lambda off: params_for(0.0))
    out = comp.download(frame_t)
    centre = (slice(120, 180), slice(130, 190))
    want = crop[70:130, 70:130].astype(np.uint8)
    assert np.array_equal(out[centre], want)
    assert np.array_equal(out[:50], frame[:50])  # above the ROI


def test_spans_match_fill_convex_poly_and_morphology():
    """The mask's binary stage is exact: cv2.fillConvexPoly, then cv2.erode / cv2.dilate."""
    rng = np.random.default_rng(7)
    for i in range(150):
        h, w = (int(v) for v in rng.integers(8, 200, size=2))
        pts = rng.normal(size=(int(rng.integers(3, 106)), 2)) * rng.uniform(1, 0.4 * min(h, w)) + (w / 2, h / 2)
        pts = np.clip(pts, 0, (w - 1, h - 1))  # inside the ROI: exact (outside, cv2 clips its own way)
        hull = np.round(cv2.convexHull(pts.astype(np.float32))).astype(np.int32)
        ref = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(ref, hull, 255)
        lo, hi = hull_spans(hull, h, w)
        x = np.arange(w)
        assert np.array_equal((x >= lo[:, None]) & (x <= hi[:, None]), ref > 0)
        k, erode = int(rng.integers(2, 16)), bool(i % 2)
        want = (cv2.erode if erode else cv2.dilate)(ref, np.ones((k, k), np.uint8))
        lo, hi = span_morph(lo, hi, k, erode, w)
        assert np.array_equal((x >= lo[:, None]) & (x <= hi[:, None]), want > 0), (i, k, erode)


def test_timing_1080p(analysed, comp):
    """Not a gate: prints cv2 vs torch-CPU time per paste, ~420 px face in a 1080p frame, one thread each."""
    img, faces = analysed["yaoming"]
    big, face = scaled(img, faces[0], 4.0)
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[: min(1080, big.shape[0]), : big.shape[1]] = big[:1080]
    crop, m = make_crop(frame, face, 256)
    generated = moved(face, 0.95)
    ref, frame_t = frame.copy(), comp.upload(frame.copy())
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        times = {"cv2": [], "torch": []}
        for _ in range(4):
            t0 = time.perf_counter()
            roi, _ = cpu_paste(ref, crop, m, face, generated)
            t1 = time.perf_counter()
            comp.paste(frame_t, crop, m, face.landmarks, generated, face.kps)
            t2 = time.perf_counter()
            times["cv2"].append(t1 - t0)
            times["torch"].append(t2 - t1)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    best = {k: min(v[1:]) * 1e3 for k, v in times.items()}
    print(f"1080p, face {face.size:.0f} px, roi {roi[2] - roi[0]}x{roi[3] - roi[1]}: "
          f"cv2 {best['cv2']:.1f} ms, torch cpu {best['torch']:.1f} ms per paste (best of 3)")
