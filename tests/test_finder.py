"""Face finding in video without a whole-frame detection on every frame (issue 16): windows
around known faces find what the whole pass finds, a new face appears within `every`
frames, and a scene cut or a lost face is searched whole at once."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import PHOTOS
from swapcli.analyse.finder import FaceFinder


@pytest.fixture(scope="module")
def frames():
    """A slow pan over a photo with one face, 1280x720, as a camera would film it."""
    photo = cv2.imread(str(PHOTOS["yaoming"]))
    canvas = np.full((900, 1500, 3), 90, np.uint8)
    face = cv2.resize(photo, None, fx=1.6, fy=1.6)
    canvas[200:200 + face.shape[0], 500:500 + face.shape[1]] = face[:700, :1000]
    return [np.ascontiguousarray(canvas[60 + i:780 + i, 40 + 3 * i:1320 + 3 * i]) for i in range(24)]


def test_windows_find_what_the_whole_frame_pass_finds(analyser, frames):
    finder = FaceFinder(analyser, 480, every=8)
    for frame in frames:
        found = finder.find(frame)
        whole = analyser.detect(frame)
        assert len(found) == len(whole) == 1
        assert np.abs(found[0].kps - whole[0].kps).max() < 4.0  # px, on a face about 250 px wide
    assert finder.stats.full == 3 and finder.stats.windows == 21  # frames 0, 8, 16 whole; the rest windows


def test_a_new_face_appears_within_every_frames(analyser, frames):
    photo = cv2.imread(str(PHOTOS["gdp"]))
    x0, y0, x1, y1 = analyser.detect(photo)[0].bbox.astype(int)
    m = (x1 - x0) // 2
    other = photo[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m]
    every = 8
    finder = FaceFinder(analyser, 480, every=every)
    appear = 3  # the second face enters on frame 3 (not a whole-pass frame)
    seen_at = None
    for i, frame in enumerate(frames[:16]):
        if i >= appear:
            frame = frame.copy()
            frame[420:420 + 280, 20:20 + 260] = cv2.resize(other, (260, 280))
        if len(finder.find(frame)) == 2 and seen_at is None:
            seen_at = i
    assert seen_at is not None and appear <= seen_at < appear + every


def test_a_scene_cut_is_searched_whole_at_once(analyser, frames):
    finder = FaceFinder(analyser, 480, every=8)
    for frame in frames[:3]:
        finder.find(frame)
    cut = cv2.resize(cv2.imread(str(PHOTOS["players"])), (1280, 720))
    faces = finder.find(cut)
    assert finder.stats.cuts == 1 and finder.stats.full == 2
    assert len(faces) == len(analyser.detect(cut)) > 1


def test_a_lost_face_is_searched_whole_at_once(analyser, frames):
    finder = FaceFinder(analyser, 480, every=8)
    finder.find(frames[0])
    moved = np.roll(frames[1], 500, axis=1)  # the face jumps far out of its window (no cut: same picture)
    faces = finder.find(moved)
    assert len(faces) == 1 and finder.stats.lost == 1 and finder.stats.full == 2
