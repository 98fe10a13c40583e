"""swapcli eval on known cases: result = target, a mirrored result, a real swap, a
frame-shuffled video; metric units on synthetic landmarks; bad input and no face."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest

from conftest import assert_clean_failure, blank_image, run_cli
from swapcli.core.ffmpeg import base_cmd, media_path

SUMMARY_KEYS = {"id_source", "id_target", "id_margin", "pose_error", "expression_error", "eye_error", "retrieval"}
VIDEO_KEYS = SUMMARY_KEYS | {"result_face_rate", "jitter", "flicker"}
TOP_KEYS = {"ok", "kind", "source", "target", "result", "faces_selected", "gallery", "metrics", "notes", "report",
            "timings_ms", "total_ms"}


def _eval(*args) -> dict:
    proc = run_cli("eval", *args, "--json", "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def evaluator(analyser):
    """In-process `swapcli eval` on the session's analyser (models loaded once)."""
    from swapcli.evaluate.inputs import Analyser
    from swapcli.evaluate.run import evaluate

    return lambda sources, target, result, **kw: evaluate(sources, target, result, analyser=Analyser(inner=analyser),
                                                          **kw)


def _crop_around(image: np.ndarray, bbox, side: int) -> np.ndarray:
    cx, cy = int((bbox[0] + bbox[2]) / 2), int((bbox[1] + bbox[3]) / 2)
    h, w = image.shape[:2]
    x0, y0 = min(max(0, cx - side // 2), w - side), min(max(0, cy - side // 2), h - side)
    return image[y0:y0 + side, x0:x0 + side].copy()


@pytest.fixture(scope="module")
def faces(tmp_path_factory, photos, analyser):
    """Single-face crops of t1: a turned face (yaw ~37, roll ~-28), its mirror image, a frontal face;
    and a gallery folder of four other people."""
    from swapcli.read.image import read_image

    d = tmp_path_factory.mktemp("eval")
    t1 = read_image(photos["t1"]).bgr
    found = analyser.detect(t1)
    assert len(found) == 6
    out = {}
    turned = _crop_around(t1, found[1].bbox, 200)
    cv2.imwrite(str(d / "turned.png"), turned)
    cv2.imwrite(str(d / "turned_copy.png"), turned)
    cv2.imwrite(str(d / "turned_flip.png"), turned[:, ::-1])
    cv2.imwrite(str(d / "frontal.png"), _crop_around(t1, found[5].bbox, 240))
    gallery = d / "gallery"
    gallery.mkdir()
    for k in (0, 2, 3, 4):
        cv2.imwrite(str(gallery / f"t1_{k}.jpg"), _crop_around(t1, found[k].bbox, 220))
    (gallery / "notes.txt").write_text("not a photo\n")
    for name in ("turned", "turned_copy", "turned_flip", "frontal"):
        out[name] = d / f"{name}.png"
    out["gallery"] = gallery
    out["dir"] = d
    return out


# --------------------------------------------------------------------------- metric units (no models)


def test_metric_units():
    from swapcli.analyse.face import Face
    from swapcli.evaluate.metrics import (
        apply_affine,
        expression_features,
        iou,
        match_faces,
        second_difference,
        similarity_fit,
    )
    from swapcli.evaluate.video import sample_centres

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (106, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = scale * pts @ rot.T + shift
    assert np.allclose(apply_affine(similarity_fit(pts, moved), pts), moved, atol=1e-6)
    a, b = expression_features(pts), expression_features(moved)
    assert all(abs(a[k] - b[k]) < 1e-6 for k in a)  # normalised: invariant to a similarity
    line = [pts + t * np.array([3.0, 1.0]) for t in range(3)]
    assert second_difference(*line, scale=100) < 1e-9  # steady motion is not jitter
    assert second_difference(line[0], line[1] + 5, line[2], scale=100) == pytest.approx(10 * np.sqrt(2), rel=1e-6)
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)

    def face(x):
        return Face(bbox=np.array([x, 0, x + 10, 10], np.float32), score=1, kps=np.zeros((5, 2)))

    targets, results = [face(0), face(50)], [face(52), face(200)]
    m0, m1 = match_faces(targets, results, (300, 100), (300, 100))
    assert m0.face is None and m1.face is results[0] and m1.how == "position" and m1.overlap > 0.6
    # a result at half size, and a mirrored one, still find their faces; identity comes last
    half = [Face(bbox=np.array([25, 0, 30, 5], np.float32), score=1, kps=np.zeros((5, 2)))]
    assert match_faces(targets[1:], half, (300, 100), (150, 50))[0].how == "position"
    flipped = [face(240)]  # x 50..60 of a 300-wide picture, mirrored
    assert match_faces(targets[1:], flipped, (300, 100), (300, 100))[0].how == "mirrored"
    far = [face(150)]
    assert match_faces(targets[1:], far, (300, 100), (300, 100))[0].face is None
    assert match_faces(targets[1:], far, (300, 100), (300, 100), identity=lambda f: 0.9)[0].how == "identity"
    assert sample_centres(10, 32) == list(range(1, 9))
    assert sample_centres(1000, 5) == [1, 250, 500, 749, 998]


# --------------------------------------------------------------------------- photos


def test_result_equals_target(faces, photos):
    out = _eval("-s", photos["yaoming"], "-t", faces["turned"], "-r", faces["turned_copy"])
    assert TOP_KEYS <= out.keys() and out["ok"] and out["kind"] == "image"
    m = out["metrics"]
    assert SUMMARY_KEYS <= m.keys()
    assert m["id_target"] > 0.99
    assert m["id_target"] > m["id_source"]
    assert m["pose_error"]["mean"] < 0.5
    assert m["expression_error"] < 0.005 and m["eye_error"] < 0.005
    assert m["retrieval"] is None and out["gallery"] is None
    face = out["faces"][0]
    assert face["matched"] and face["iou"] > 0.99
    assert abs(face["pose_target"]["yaw"]) > 20  # the turned face really is turned


def test_resized_and_mirrored_results_are_matched(faces, photos, tmp_path, evaluator):
    """A result saved at another size, or flipped, is still compared with its own face, and says how."""
    turned = cv2.imread(str(faces["turned"]))
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(turned, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA))
    out = evaluator([photos["yaoming"]], faces["turned"], small)
    face = out["faces"][0]
    assert face["matched_by"] == "position" and face["iou"] > 0.8
    assert out["metrics"]["id_target"] > 0.9 and out["metrics"]["pose_error"]["yaw"] < 3
    # The face off-centre, then the whole picture flipped: its face is now on the other side.
    wide = cv2.copyMakeBorder(turned, 0, 0, 0, turned.shape[1], cv2.BORDER_REPLICATE)
    target, flipped = tmp_path / "wide.png", tmp_path / "wide_flip.png"
    cv2.imwrite(str(target), wide)
    cv2.imwrite(str(flipped), wide[:, ::-1])
    moved = evaluator([photos["yaoming"]], target, flipped)
    assert moved["faces"][0]["matched_by"] == "mirrored" and moved["faces"][0]["iou"] > 0.8
    assert moved["metrics"]["id_target"] > 0.9 and any("mirrored" in n for n in moved["notes"])


def test_result_equals_target_on_every_pose_axis(faces, photos, evaluator):
    """The eval pitch bug: a face compared with itself reads ~0 degrees on yaw, pitch and roll."""
    for name in ("turned", "frontal"):
        m = evaluator([photos["yaoming"]], faces[name], faces[name])["metrics"]
        err = m["pose_error"]
        assert err["yaw"] < 0.5 and err["pitch"] < 0.5 and err["roll"] < 0.5, (name, err)
        assert err["yaw_proxy"] < 0.005 and err["roll_5pt"] < 0.5
        assert m["expression_follows_target"] is None or m["expression_to_target"] < 0.05


def test_mirrored_result_has_large_pose_error(faces, photos, evaluator):
    m = evaluator([photos["yaoming"]], faces["turned"], faces["turned_flip"])["metrics"]
    # ArcFace barely notices a mirror image; the pose does: yaw and roll change sign
    assert m["pose_error"]["yaw"] > 40
    assert m["pose_error"]["roll"] > 30
    assert m["eye_error"] > 0.05


@pytest.mark.slow
def test_real_swap_moves_identity_with_gallery_and_report(faces, photos, swapper, tmp_path):
    from swapcli.core.options import OutputOptions, SelectOptions
    from swapcli.pipeline.image import swap_image

    swapped = tmp_path / "swapped.png"
    sources = swapper.load_sources([photos["yaoming"]])
    swap_image(swapper, sources, faces["frontal"], swapped, SelectOptions(), OutputOptions(mark=False))
    report = tmp_path / "report.html"
    out = _eval("-s", photos["yaoming"], "-t", faces["frontal"], "-r", swapped, "--gallery", faces["gallery"],
                "--report", report)
    m = out["metrics"]
    print(json.dumps(m))
    assert m["id_source"] > m["id_target"]
    assert m["id_source"] > 0.3
    assert out["gallery"]["identities"] == 4
    assert m["retrieval"]["candidates"] == 5 and m["retrieval"]["top1"] == 1.0
    assert m["pose_error"]["mean"] < 15  # a 2D engine keeps the target's head pose roughly
    html = report.read_text(encoding="utf-8")
    assert out["report"] == str(report)
    assert html.startswith("<!DOCTYPE html>") and html.count("data:image/jpeg;base64,") == 3
    assert "http" not in html and "<script" not in html  # self-contained
    assert "identity to source" in html
    # the report is not overwritten without --overwrite
    again = run_cli("eval", "-s", photos["yaoming"], "-t", faces["frontal"], "-r", swapped, "--report", report)
    assert_clean_failure(again, 2)


# --------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def clips(tmp_path_factory, analyser):
    from swapcli.evaluate.samples import make_clip, poster

    d = tmp_path_factory.mktemp("evalvid")
    clip = make_clip(d / "clip.mp4", poster(analyser, 1, (480, 360), margin=1.3), (480, 360), 40)
    shuffled = d / "shuffled.mp4"
    subprocess.run([*base_cmd(), "-y", "-i", media_path(clip), "-vf", "shuffleframes=2 0 3 1", "-c:v", "libx264",
                    "-preset", "veryfast", "-crf", "18", media_path(shuffled)], check=True, capture_output=True)
    return {"clip": clip, "shuffled": shuffled}


@pytest.mark.slow
def test_video_jitter_and_flicker(clips, photos, evaluator):
    same = evaluator([photos["gdp"]], clips["clip"], clips["clip"], frames=6)
    shuf = _eval("-s", photos["gdp"], "-t", clips["clip"], "-r", clips["shuffled"], "--frames", "6",
                 "--det-size", "320")
    for out in (same, shuf):
        assert out["kind"] == "video" and VIDEO_KEYS <= out["metrics"].keys()
        assert out["frames"]["sampled"] == 6 and len(out["per_frame"]) == 6
    s, x = same["metrics"], shuf["metrics"]
    print("jitter", s["jitter"], x["jitter"], "flicker", s["flicker"], x["flicker"])
    assert s["jitter"]["excess"] == 0 and s["flicker"]["excess"] == 0 and s["id_target"] > 0.99
    assert x["result_face_rate"] == 1.0
    assert x["jitter"]["result"] > 5 * s["jitter"]["result"]
    assert x["jitter"]["ratio"] > 5 and x["jitter"]["excess"] > 2
    assert x["flicker"]["ratio"] > 2


# --------------------------------------------------------------------------- failures


def test_bad_input_exits_2(faces, photos, clips, tmp_path):
    missing = run_cli("eval", "-s", photos["yaoming"], "-t", faces["turned"], "-r", tmp_path / "nope.png")
    assert_clean_failure(missing, 2)
    assert "RESULT" in missing.stderr
    text = tmp_path / "fake.mp4"
    text.write_text("not a video\n")
    assert_clean_failure(run_cli("eval", "-s", photos["yaoming"], "-t", text, "-r", faces["turned"]), 2)
    kind = run_cli("eval", "-s", photos["yaoming"], "-t", faces["turned"], "-r", clips["clip"], "--json")
    assert_clean_failure(kind, 2)
    assert json.loads(kind.stdout)["exit_code"] == 2


def test_no_face_exits_3(faces, photos, tmp_path):
    blank = blank_image(tmp_path / "blank.png", size=(200, 200))
    proc = run_cli("eval", "-s", photos["yaoming"], "-t", blank, "-r", faces["turned"])
    assert_clean_failure(proc, 3)


def test_new_measures_on_known_cases(photos, analyser):
    """forehead_hair, face_chroma and expression_follow read what they should on made cases."""
    from swapcli.evaluate import metrics as M
    from swapcli.read.image import read_image

    yao = read_image(photos["yaoming"]).bgr
    face = max(analyser.detect(yao), key=lambda f: f.area)
    lmk = analyser.landmarks(yao, face)
    assert M.forehead_hair_change(yao, yao, lmk) == 0.0
    fringe = yao.copy()
    (x0, y0, x1, y1), band = M.forehead_band(yao.shape, lmk)
    fringe[y0:y1, x0:x1][band > 0] = (20, 35, 60)  # dark brown hair over the strip above the brows
    assert M.forehead_hair_change(yao, fringe, lmk) > 0.5
    grey = cv2.cvtColor(cv2.cvtColor(yao, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert M.is_greyscale(grey) and not M.is_greyscale(yao)
    assert M.face_chroma(grey, lmk) == 0.0
    tinted = grey.copy()
    tinted[..., 2] = np.clip(tinted[..., 2].astype(int) + 30, 0, 255)
    assert M.face_chroma(tinted, lmk) >= 25
    astro = read_image(photos["astronaut"]).bgr
    a_face = max(analyser.detect(astro), key=lambda f: f.area)
    a_lmk = analyser.landmarks(astro, a_face)  # a wide smile; Yao Ming's mouth is open and round
    assert M.expression_follow(lmk, a_lmk, lmk).follows_target
    assert not M.expression_follow(lmk, a_lmk, a_lmk).follows_target
    assert M.expression_follow(lmk, a_lmk, lmk).differ
