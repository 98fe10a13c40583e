"""Facts about the 106-point layout that the engine relies on, re-checked against the model."""

from __future__ import annotations

import numpy as np

from swapcli.analyse.face import MIRROR_106, mirror_face, mouth_opening
from swapcli.analyse.pose import head_pose, yaw_sign
from swapcli.read.image import read_image


def test_mirror_table_is_an_involution():
    assert sorted(MIRROR_106) == list(range(106))
    assert (MIRROR_106[MIRROR_106] == np.arange(106)).all()


def test_mirror_table_matches_the_model(analyser, photos):
    image = read_image(photos["yaoming"]).bgr
    flipped = np.ascontiguousarray(image[:, ::-1])
    face = analyser.detect(image)[0]
    analyser.landmarks(image, face)
    predicted = mirror_face(face, image.shape[1])
    seen = analyser.detect(flipped)[0]
    measured = analyser.landmarks(flipped, seen)
    err = np.linalg.norm(predicted.landmarks - measured, axis=1).mean() / face.size
    assert err < 0.03
    assert yaw_sign(predicted.kps) * yaw_sign(face.kps) <= 0 or abs(yaw_sign(face.kps)) < 0.05


def test_pose_of_flipped_face_mirrors_yaw_and_roll(analyser, photos):
    image = read_image(photos["t1"]).bgr
    face = max(analyser.detect(image), key=lambda f: abs(yaw_sign(f.kps)))
    p = head_pose(face.kps)
    q = head_pose(mirror_face(face, image.shape[1]).kps)
    assert abs(p.yaw) > 15
    assert abs(p.yaw + q.yaw) < 2 and abs(p.roll + q.roll) < 2


def test_mouth_opening_scale(analyser, photos):
    image = read_image(photos["gdp"]).bgr
    values = [mouth_opening(analyser.landmarks(image, f)) for f in analyser.detect(image) if f.size >= 60]
    assert all(0 <= v < 0.5 for v in values)


def test_landmarks_equal_insightfaces_own(analyser, photos):
    """swapcli composes the landmark crop itself (no scikit-image at start-up): the points are
    insightface's Landmark.get's within float rounding."""
    from swapcli.analyse.insight import _Probe

    image = read_image(photos["t1"]).bgr
    faces = analyser.detect(image)
    model = analyser._load("2d106det")
    assert len(faces) == 6
    for face in faces:
        ours = analyser.landmarks(image, face)
        theirs = model.get(image, _Probe(bbox=face.bbox, kps=face.kps, det_score=face.score))
        assert np.abs(ours - theirs).max() < 0.01
