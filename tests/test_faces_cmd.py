"""swapcli faces, --face-order and the smaller-detector retry (issue 14, "Seeing the faces")."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from clips import make_clip
from conftest import PHOTOS, assert_clean_failure, blank_image, iou, package_file, run_cli
from swapcli.analyse.face import Face
from swapcli.read.image import read_image
from swapcli.select.faces import FACE_ORDERS, order_faces, select_faces, size_filter

TOM = package_file("insightface", "data", "images", "Tom_Hanks_54745.png")  # 112 px crop: the face fills it
FACE_KEYS = {"index", "bbox", "size", "score", "pose", "largest", "skipped", "skip_reason"}


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _face(x: float, y: float, side: float, score: float = 0.8) -> Face:
    kps = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32) * side + [x, y]
    return Face(bbox=np.array([x, y, x + side, y + side], np.float32), score=score, kps=kps.astype(np.float32))


# --------------------------------------------------------------------------- ordering (no models)


def test_every_order_sorts_by_its_measure():
    a, b, c = _face(0, 300, 50, 0.9), _face(200, 0, 90, 0.6), _face(400, 150, 70, 0.75)
    want = {"left-right": [a, b, c], "right-left": [c, b, a], "top-bottom": [b, c, a], "bottom-top": [a, c, b],
            "small-large": [a, c, b], "large-small": [b, c, a], "best-worst": [a, c, b], "worst-best": [b, c, a]}
    assert set(want) == set(FACE_ORDERS)
    for order, faces in want.items():
        assert order_faces([b, c, a], order) == faces, order
        assert select_faces([a, b, c], "0", order=order) == [faces[0]], order


def test_tracker_numbers_tracks_in_face_order():
    from swapcli.select.tracking import Tracker

    left, right = _face(10, 10, 60), _face(300, 10, 100)
    for order, want in (("left-right", left), ("right-left", right), ("small-large", left), ("large-small", right)):
        tracker = Tracker("0", order=order)
        for k in range(3):
            chosen = tracker.update([_face(10 + k, 10, 60), _face(300 + k, 10, 100)], k / 25)
        assert len(chosen) == 1 and abs(chosen[0].face.bbox[0] - want.bbox[0]) < 5, order


# --------------------------------------------------------------------------- swapcli faces on a photo


def test_faces_lists_players_in_order_with_the_detectors_boxes(analyser):
    proc = run_cli("faces", PHOTOS["players"], "--json")
    payload = _json(proc)
    image = read_image(PHOTOS["players"]).bgr
    detected = analyser.detect(image)  # the default detector size, as `swapcli image`
    assert payload["kind"] == "image" and (payload["width"], payload["height"]) == (image.shape[1], image.shape[0])
    assert payload["face_order"] == "left-right" and not payload["retried"] and payload["det_size"] == 640
    faces = payload["faces"]
    assert len(faces) == len(detected) >= 10 and all(set(f) >= FACE_KEYS for f in faces)
    for got, want in zip(faces, detected):  # same boxes, same (left to right) order
        assert iou(got["bbox"], want.bbox) > 0.99
        assert abs(got["score"] - want.score) < 1e-3
        assert set(got["pose"]) == {"yaw", "pitch", "roll"}
    centres = [(f["bbox"][0] + f["bbox"][2]) / 2 for f in faces]
    assert centres == sorted(centres)
    # Small background faces are flagged the way `--faces all|N` skips them, and get no index.
    kept, skipped = size_filter(detected, "all", shape=image.shape)
    assert skipped, "players.jpg has faces too small for --faces all|N"
    assert [f["bbox"] for f in faces if f["skipped"]] == [s["bbox"] for s in skipped]
    assert all(f["index"] is None and "largest face" in f["skip_reason"] for f in faces if f["skipped"])
    assert [f["index"] for f in faces if not f["skipped"]] == list(range(len(kept)))
    assert sum(f["largest"] for f in faces) == 1
    # The text table: a header, then one line per face, N first ('-' when skipped).
    lines = run_cli("faces", PHOTOS["players"]).stdout.splitlines()
    assert len(lines) == len(faces) + 1
    assert [ln.split()[0] for ln in lines[1:]] == ["-" if f["index"] is None else str(f["index"]) for f in faces]


def test_preview_has_the_image_size_and_is_never_clobbered(tmp_path):
    preview = tmp_path / "boxes.png"
    proc = run_cli("faces", PHOTOS["gdp"], "--preview", preview, "-q")
    assert proc.returncode == 0, proc.stderr
    drawn, original = cv2.imread(str(preview)), read_image(PHOTOS["gdp"]).bgr
    assert drawn is not None and drawn.shape == original.shape
    assert not np.array_equal(drawn, original)  # boxes were drawn
    before = preview.read_bytes()
    assert_clean_failure(run_cli("faces", PHOTOS["players"], "--preview", preview), 2)  # exists: left alone
    assert preview.read_bytes() == before
    assert run_cli("faces", PHOTOS["players"], "--preview", preview, "--overwrite", "-q").returncode == 0
    assert cv2.imread(str(preview)).shape == read_image(PHOTOS["players"]).bgr.shape
    assert_clean_failure(run_cli("faces", PHOTOS["gdp"], "--preview", tmp_path / "p.gif"), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.png"]  # no temp files left


def test_faces_without_a_face_exit_3(tmp_path):
    proc = run_cli("faces", blank_image(tmp_path / "blank.png"), "--json")
    assert_clean_failure(proc, 3)
    assert json.loads(proc.stdout)["exit_code"] == 3


# --------------------------------------------------------------------------- --face-order in swapcli image


def _changed(target: np.ndarray, output_path) -> np.ndarray:
    return np.abs(read_image(output_path).bgr.astype(int) - target.astype(int)).max(axis=2) > 0


def test_face_order_changes_which_face_faces_0_swaps(tmp_path):
    target = PHOTOS["t1"]
    listed = {o: _json(run_cli("faces", target, "--face-order", o, "--json"))["faces"]
              for o in ("left-right", "large-small")}
    image = read_image(target).bgr
    boxes = {}
    for order in ("left-right", "large-small"):
        out = tmp_path / f"{order}.png"
        payload = _json(run_cli("image", PHOTOS["yaoming"], target, "-o", out, "--faces", "0", "--face-order", order,
                                "--no-mark", "--json", "-q"))
        assert payload["face_order"] == order and payload["faces_swapped"] == 1
        box = payload["faces"][0]["bbox"]
        assert iou(box, next(f["bbox"] for f in listed[order] if f["index"] == 0)) > 0.99  # as `swapcli faces` said
        changed = _changed(image, out)
        x0, y0, x1, y1 = box
        grow = 0.25 * (x1 - x0)
        ys, xs = np.nonzero(changed)
        assert len(xs) > 0.2 * (x1 - x0) * (y1 - y0)
        assert xs.min() >= x0 - grow and xs.max() <= x1 + grow and ys.min() >= y0 - grow and ys.max() <= y1 + grow
        boxes[order] = box
    assert iou(boxes["left-right"], boxes["large-small"]) == 0  # another face, and only that one


@pytest.mark.parametrize("command", ["image", "video", "batch", "faces"])
def test_bad_face_order_is_one_usage_line(tmp_path, command):
    args = {"image": [PHOTOS["yaoming"], PHOTOS["gdp"]], "video": [PHOTOS["yaoming"], tmp_path / "x.mp4"],
            "batch": [PHOTOS["yaoming"], PHOTOS["gdp"], "-o", tmp_path / "out"], "faces": [PHOTOS["gdp"]]}[command]
    proc = run_cli(command, *args, "--face-order", "middle-out")
    assert_clean_failure(proc, 2)
    assert "--face-order" in proc.stderr and "'middle-out'" in proc.stderr and "left-right" in proc.stderr
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- a face filling the frame


def test_tight_crop_is_found_by_a_smaller_detector_as_source_and_target(tmp_path):
    src = _json(run_cli("image", TOM, PHOTOS["yaoming"], "-o", tmp_path / "a.jpg", "--json"))
    assert [(r["role"], r["configured_det_size"]) for r in src["detector_retries"]] == [("source", 640)]
    assert src["detector_retries"][0]["det_size"] < 640 and src["faces_swapped"] == 1
    proc = run_cli("image", PHOTOS["yaoming"], TOM, "-o", tmp_path / "b.png")
    assert proc.returncode == 0, proc.stderr
    assert "no face at detector size 640; found at" in " ".join(proc.stderr.split())
    assert cv2.imread(str(tmp_path / "b.png")).shape == cv2.imread(str(TOM)).shape
    listed = _json(run_cli("faces", TOM, "--json"))
    assert listed["retried"] and listed["found_at_det_size"] < 640 and len(listed["faces"]) == 1
    x0, y0, x1, y1 = listed["faces"][0]["bbox"]
    assert (x1 - x0) > 0.6 * 112  # the face that fills the crop, not a speck


# --------------------------------------------------------------------------- swapcli faces on a video


def test_video_lists_one_track_over_the_sampled_frames(tmp_path):
    clip = make_clip(tmp_path / "one.mp4", photo="yaoming", seconds=2, fps=25, size=(320, 240), audio=False)
    sheet = tmp_path / "tracks.png"
    payload = _json(run_cli("faces", clip, "--json", "--preview", sheet))
    assert payload["kind"] == "video" and payload["frames"] == 50
    assert payload["every"] == 5 and payload["frames_sampled"] == 10  # 5 frames a second by default
    [track] = payload["tracks"]
    assert track["index"] == 0 and track["first_frame"] == 0 and track["last_frame"] == 45
    assert track["frames_seen"] == 10 and set(track["pose"]) == {"yaw", "pitch", "roll"}
    assert track["thumbnail"]["frame"] % 5 == 0
    drawn = cv2.imread(str(sheet))
    assert drawn is not None and drawn.shape[0] >= 112 and drawn.shape[1] >= 112
    every = _json(run_cli("faces", clip, "--json", "--every", "10"))
    assert every["frames_sampled"] == 5 and [t["frames_seen"] for t in every["tracks"]] == [5]
    lines = run_cli("faces", clip, "-q").stdout.splitlines()
    assert len(lines) == 2 and lines[1].split()[:5] == ["0", "0", "0", "45", "10"]
