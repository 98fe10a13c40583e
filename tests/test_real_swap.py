"""The embedded engine is a face swap: only the identity changes.

Each test swaps real packaged photos (and versions of them made here: crops, flips, greyscale,
an object drawn over a cheek) through the real pipeline and measures what must stay the target's:
the forehead above the brows, the expression, the head pose, the colour space, what covers the
face. The numbers come from swapcli.evaluate.metrics, the same code `swapcli eval` uses.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import run_cli
from swapcli.analyse.face import Face
from swapcli.evaluate import metrics as M
from swapcli.read.image import read_image
from swapcli.swap.base import SourceFace


def _largest(analyser, image) -> Face:
    face = max(analyser.detect(image), key=lambda f: f.area)
    analyser.landmarks(image, face)
    analyser.embed(image, face)
    return face


def _crop(image: np.ndarray, face: Face, k: float = 1.3) -> np.ndarray:
    x0, y0, x1, y1 = face.bbox
    s = max(x1 - x0, y1 - y0) * k
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[int(max(0, cy - s)):int(min(h, cy + s)), int(max(0, cx - s)):int(min(w, cx + s))])


@pytest.fixture(scope="module")
def people(photos, analyser):
    """Face crops of different people: (name, image, face with landmarks and embedding)."""
    out = []
    for name in ("yaoming", "astronaut"):
        image = read_image(photos[name]).bgr
        out.append((name, image, _largest(analyser, image)))
    for name in ("t1", "gdp"):
        image = read_image(photos[name]).bgr
        for k, f in enumerate(sorted((f for f in analyser.detect(image) if f.size >= 60), key=lambda f: f.center[0])):
            crop = _crop(image, f)
            mid = np.array(crop.shape[1::-1]) / 2
            face = min(analyser.detect(crop), key=lambda g: np.linalg.norm(np.subtract(g.center, mid)))
            analyser.landmarks(crop, face)
            analyser.embed(crop, face)
            out.append((f"{name}_{k}", crop, face))
    return out


def _swap(swapper, source, target_image, target_face) -> tuple[np.ndarray, dict]:
    out = target_image.copy()
    face = Face(bbox=target_face.bbox.copy(), score=target_face.score, kps=target_face.kps.copy(),
                landmarks=target_face.landmarks.copy())
    report = swapper.swap_face(out, face, [SourceFace(source[1], source[2])])
    return out, report.info


def _result_face(analyser, image, target_face) -> Face:
    faces = analyser.detect(image)
    face = min(faces, key=lambda f: np.linalg.norm(np.subtract(f.center, target_face.center)))
    assert np.linalg.norm(np.subtract(face.center, target_face.center)) < 0.3 * target_face.size
    analyser.landmarks(image, face)
    analyser.embed(image, face)
    return face


def by_name(people, name):
    return next(p for p in people if p[0] == name)


def test_source_fringe_stays_off_the_forehead(people, swapper, analyser):
    """The astronaut's brown fringe is not pasted over the targets' foreheads."""
    source = by_name(people, "astronaut")
    changes = []
    for name, image, face in people:
        if name == "astronaut":
            continue
        out, _ = _swap(swapper, source, image, face)
        change = M.forehead_hair_change(image, out, face.landmarks)
        if change is not None:
            changes.append((name, change))
    assert len(changes) >= 5
    assert all(c <= 0.10 for _, c in changes), changes


def test_expression_follows_the_target(people, swapper, analyser):
    """Open mouth onto smile, smile onto open mouth, and every other pair whose expressions
    differ: the result wears the target's expression, not the source's."""
    follows = []
    for s in people:
        for t in people:
            if s[0] == t[0]:
                continue
            out, _ = _swap(swapper, s, t[1], t[2])
            got = _result_face(analyser, out, t[2])
            f = M.expression_follow(t[2].landmarks, s[2].landmarks, got.landmarks)
            if f.differ:
                follows.append((s[0], t[0], f.follows_target))
    share = np.mean([x[2] for x in follows])
    print(f"expression pairs={len(follows)} follows_target={share:.3f}")
    assert len(follows) >= 30
    assert share >= 0.85, [x for x in follows if not x[2]]
    # The named case of the issue: Yao Ming's open mouth must not replace the astronaut's smile.
    yao, astro = by_name(people, "yaoming"), by_name(people, "astronaut")
    out, _ = _swap(swapper, yao, astro[1], astro[2])
    got = _result_face(analyser, out, astro[2])
    assert M.expression_follow(astro[2].landmarks, yao[2].landmarks, got.landmarks).follows_target


def test_greyscale_target_stays_grey(photos, tmp_path):
    """A black-and-white photo gets a black-and-white face, through the CLI and in the file."""
    out = tmp_path / "grey.png"
    proc = run_cli("image", photos["astronaut"], photos["camera"], "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(out) as im:
        assert im.mode == "L"
    # A colour file holding a grey picture stays grey too (channels equal), measured in the face.
    yao = cv2.cvtColor(cv2.imread(str(photos["yaoming"]), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
    grey_rgb = tmp_path / "yao_grey.jpg"
    cv2.imwrite(str(grey_rgb), yao, [cv2.IMWRITE_JPEG_QUALITY, 98])
    out2 = tmp_path / "grey2.png"
    proc = run_cli("image", photos["astronaut"], grey_rgb, "-o", out2)
    assert proc.returncode == 0, proc.stderr
    result = cv2.imread(str(out2))
    assert result.ndim == 3
    lmk = json.loads(run_cli("image", photos["astronaut"], grey_rgb, "-o", tmp_path / "x.png", "--json").stdout)
    assert lmk["faces_swapped"] == 1
    assert np.abs(result.astype(int) - yao.astype(int)).max() > 20  # the face did change
    assert M.face_chroma(result, _face_points(result)) <= 2


def _face_points(image):
    from swapcli.analyse.insight import InsightAnalyser

    a = InsightAnalyser()
    face = max(a.detect(image), key=lambda f: f.area)
    return a.landmarks(image, face)


@pytest.mark.parametrize("colour", [(200, 120, 30), (40, 40, 40)], ids=["blue", "black"])
def test_object_over_the_cheek_stays_in_front(people, swapper, analyser, colour):
    """A blue or black object drawn over the target's cheek is left in front of the new face."""
    source = by_name(people, "t1_5")
    for name in ("yaoming", "astronaut", "t1_2"):
        _, image, face = by_name(people, name)
        lmk = face.landmarks
        iod = M.interocular(lmk)
        cheek = lmk[[36, 33, 37]].mean(0) * 0.4 + lmk[[52, 3]].mean(0) * 0.6
        drawn = image.copy()
        mask = np.zeros(image.shape[:2], np.uint8)
        axes = (int(0.33 * iod), int(0.2 * iod))
        cv2.ellipse(drawn, tuple(np.round(cheek).astype(int)), axes, 30, 0, 360, colour, -1)
        cv2.ellipse(mask, tuple(np.round(cheek).astype(int)), axes, 30, 0, 360, 255, -1)
        f = _largest(analyser, drawn)
        out, _ = _swap(swapper, source, drawn, f)
        inner = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
        kept = (np.abs(out.astype(int) - drawn.astype(int)).max(2)[inner] <= 12).mean()
        assert kept >= 0.9, (name, kept)
        # ... while the rest of the face did change
        hull = M.face_region(image.shape, f.landmarks, shrink=0.15)
        (x0, y0, x1, y1), region = hull
        changed = np.abs(out[y0:y1, x0:x1].astype(int) - drawn[y0:y1, x0:x1].astype(int)).max(2)
        assert (changed[(region > 0) & ~inner[y0:y1, x0:x1]] > 12).mean() > 0.3, name


def test_turned_target_keeps_its_pose(people, swapper, analyser):
    """A frontal source onto turned targets: the result is turned as the target is."""
    errors = []
    for source_name in ("yaoming", "astronaut", "t1_5"):
        source = by_name(people, source_name)
        for name in ("gdp_1", "t1_1", "t1_4"):
            _, image, face = by_name(people, name)
            out, info = _swap(swapper, source, image, face)
            got = _result_face(analyser, out, face)
            err = M.pose_error(face, got)
            errors.append((name, err["yaw_proxy"], err["roll_5pt"], err["yaw"]))
    print([(n, round(a, 3), round(b, 1), round(c, 1)) for n, a, b, c in errors])
    # gdp_1's eyes are 12 px apart: one pixel of keypoint noise is 0.08 of its eye distance, and
    # a degree of eye-line angle on these ~100 px faces is under a pixel.
    assert np.mean([e[1] for e in errors]) <= 0.08 and max(e[1] for e in errors) <= 0.2
    assert np.mean([e[2] for e in errors]) <= 4.0 and max(e[3] for e in errors) <= 12.0


def test_turned_source_is_said_to_limit(photos, tmp_path):
    """A strongly turned source onto a frontal target: the engine says so in one warning line and in
    JSON; a frontal source onto the same target says nothing."""
    out = tmp_path / "turned.png"
    proc = run_cli("image", photos["camera"], photos["astronaut"], "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    face = json.loads(proc.stdout)["faces"][0]
    assert "pose_limited" in face and face["pose_gap"] > 40
    warnings = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln and "pose limits" in ln]
    assert len(warnings) == 1, proc.stderr
    frontal = run_cli("image", photos["yaoming"], photos["astronaut"], "-o", tmp_path / "f.png", "--json")
    assert "pose_limited" not in json.loads(frontal.stdout)["faces"][0] and "WARNING" not in frontal.stderr


def test_crowd_faces_are_left_alone(photos, tmp_path):
    """--faces all swaps the team, not the 13-15 px faces in the crowd; JSON says what was skipped."""
    out = tmp_path / "team.jpg"
    proc = run_cli("image", photos["astronaut"], photos["players"], "--faces", "all", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    skipped = payload["faces_skipped"]
    assert payload["faces_swapped"] >= 15 and skipped
    assert all(s["size"] < 20 and "largest face" in s["why"] for s in skipped)
    everything = run_cli("image", photos["astronaut"], photos["players"], "--faces", "all", "--min-face-share", "0",
                         "-o", tmp_path / "all.jpg", "--json")
    assert json.loads(everything.stdout)["faces_swapped"] == payload["faces_found"]
