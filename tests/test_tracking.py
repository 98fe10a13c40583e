"""Face tracking and temporal smoothing on synthetic detections (no models, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from swapcli.analyse.face import Face
from swapcli.blend.ghost_mask import params_for
from swapcli.select.tracking import (
    MaskSmoother,
    OneEuroFilter,
    FaceSmoother,
    SmoothingParams,
    Tracker,
    iou_matrix,
    params_continuous,
)

FPS = 30.0
KPS_T = np.array([[-0.18, -0.10], [0.18, -0.10], [0.0, 0.05], [-0.14, 0.20], [0.14, 0.20]])
LMK_T = np.random.default_rng(7).uniform(-0.45, 0.45, size=(106, 2))
IDS = {name: v / np.linalg.norm(v) for name, v in zip("ABCD", np.random.default_rng(3).normal(size=(4, 512)))}


def make_face(who: str, cx: float, cy: float, size: float = 100.0, noise: float = 0.0,
              rng: np.random.Generator | None = None, score: float = 0.9) -> Face:
    """A detection of `who` centred at (cx, cy); `noise` px of Gaussian jitter on every point."""
    rng = rng or np.random.default_rng(0)
    c = np.array([cx, cy])
    jit = lambda shape: rng.normal(0.0, noise, size=shape) if noise else 0.0  # noqa: E731
    bbox = np.concatenate([c - size / 2, c + size / 2]) + jit(4)
    return Face(
        bbox=bbox.astype(np.float32),
        score=score,
        kps=(c + size * KPS_T + jit((5, 2))).astype(np.float32),
        landmarks=(c + size * LMK_T + jit((106, 2))).astype(np.float32),
        extra={"who": who},
    )


class Embedder:
    """Consistent-but-noisy identity vectors (cosine ~0.8 to the identity), counting calls per person."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.calls: dict[str, int] = {}

    def __call__(self, face: Face) -> np.ndarray:
        who = face.extra["who"]
        self.calls[who] = self.calls.get(who, 0) + 1
        v = IDS[who] + 0.75 * self.rng.normal(size=512) / np.sqrt(512)
        return v / np.linalg.norm(v)


def ids_of(out) -> dict[str, int]:
    return {tf.face.extra["who"]: tf.track.id for tf in out}


# --------------------------------------------------------------------------- association


def test_identity_stays_on_its_track_through_motion_and_crossing():
    emb = Embedder()
    tracker = Tracker("all", embed=emb)
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    for k in range(60):
        t = k / FPS
        ax = 100 + 8 * k  # A walks right across B's path (full overlap around k = 25)
        bx = 400 - 4 * k
        out = tracker.update([make_face("A", ax, 200), make_face("B", bx, 205)], t)
        for who, tid in ids_of(out).items():
            seen[who].add(tid)
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1
    assert seen["A"] != seen["B"]


def test_one_frame_miss_is_bridged_five_frame_miss_is_not():
    tracker = Tracker("largest", max_misses=10)
    results = []
    for k in range(40):
        visible = k != 10 and not (20 <= k < 25)
        faces = [make_face("A", 100 + 3 * k, 200)] if visible else []
        results.append(tracker.update(faces, k / FPS))
    tid = results[0][0].track.id
    one = results[10]
    assert len(one) == 1 and one[0].bridged and one[0].track.id == tid
    # extrapolated along the motion (+3 px/frame), not frozen at the last box
    assert one[0].face.center[0] > results[9][0].face.center[0] + 1.0
    assert [len(results[k]) for k in range(20, 25)] == [1, 1, 0, 0, 0]
    assert all(tf.bridged for k in (20, 21) for tf in results[k])
    back = results[25]
    assert len(back) == 1 and not back[0].bridged and back[0].track.id == tid


def test_a_bridged_face_works_out_its_own_pose_and_skin():
    """What was cached on the last frame's face (its 3D pose, skin maps) belongs to that face in
    that picture: a face moved over a missed frame must not inherit it. (It did, whenever the
    last face had been swapped before the missed frame was analysed, so video output depended
    on thread timing.)"""
    from swapcli.analyse.skin import face_pose

    tracker = Tracker("largest", max_misses=10)
    (seen,) = tracker.update([make_face("A", 100, 200)], 0.0)
    (seen,) = tracker.update([make_face("A", 110, 200)], 1 / FPS)
    pose = face_pose(seen.face)  # the swap of that frame caches it
    (gap,) = tracker.update([], 2 / FPS)
    assert gap.bridged and gap.face.extra["track"] == seen.face.extra["track"]
    assert gap.face.cache == {}
    assert face_pose(gap.face).shift[0] > pose.shift[0] + 1.0  # fitted where the face moved to


def test_passer_by_does_not_steal_largest_even_when_occluding():
    emb = Embedder()
    tracker = Tracker("largest", embed=emb)
    swapped = []
    for k in range(50):
        faces = []
        bx = -150 + 40 * k  # a larger passer-by walks past in front of A, visible for 6 frames
        occluded = abs(bx - 300) < 60
        if not occluded:
            faces.append(make_face("A", 300, 200, 100))
        if 180 < bx < 420:
            faces.append(make_face("B", bx, 210, 140))
        faces.sort(key=lambda f: f.center[0])
        swapped.append(ids_of(tracker.update(faces, k / FPS)))
    a_id = swapped[0]["A"]
    assert all("B" not in s for s in swapped)
    assert all(s.get("A", a_id) == a_id for s in swapped)
    assert sum("A" in s for s in swapped) >= 45  # occlusion frames mostly bridged


def test_largest_switches_after_a_sustained_larger_face():
    tracker = Tracker("largest", switch_frames=8)
    who = []
    for k in range(30):
        faces = [make_face("A", 150, 200, 100)]
        if k >= 5:
            faces.append(make_face("B", 450, 200, 150))
        who.append([tf.face.extra["who"] for tf in tracker.update(faces, k / FPS)])
    assert who[4] == ["A"] and who[10] == ["A"]  # sticky for a few frames
    assert who[29] == ["B"]


def test_nth_face_is_locked_at_first_appearance():
    tracker = Tracker("1", embed=Embedder())
    who = []
    for k in range(40):  # A starts left, B right; they swap sides
        faces = sorted([make_face("A", 100 + 10 * k, 200), make_face("B", 500 - 10 * k, 260)],
                       key=lambda f: f.center[0])
        who.append([tf.face.extra["who"] for tf in tracker.update(faces, k / FPS)])
    assert who[0] == ["B"] and who[-1] == ["B"]


def test_lost_track_is_reidentified_by_embedding():
    emb = Embedder()
    tracker = Tracker("largest", embed=emb, max_misses=5)
    ids = []
    for k in range(60):
        if 10 <= k < 30:  # turned away for 20 frames, comes back elsewhere
            faces = []
        else:
            faces = [make_face("A", 150 if k < 10 else 450, 200)]
        ids += [tf.track.id for tf in tracker.update(faces, k / FPS)]
    assert len(set(ids)) == 1


# --------------------------------------------------------------------------- references


def test_references_select_the_right_people_and_assign_indices():
    emb = Embedder()
    tracker = Tracker("all", references=[IDS["B"], IDS["A"]], threshold=0.3, embed=emb)
    for k in range(20):
        out = tracker.update([make_face("A", 100, 200), make_face("B", 300, 200), make_face("C", 500, 200)],
                             k / FPS)
    got = {tf.face.extra["who"]: tf.track.assigned for tf in out}
    assert got == {"A": 1, "B": 0}
    assert all(tf.track.match >= 0.3 for tf in out)


def test_reference_that_never_appears_selects_nothing():
    for embed in (Embedder(), None):
        tracker = Tracker("largest", references=[IDS["D"]], threshold=0.3, embed=embed)
        for k in range(15):
            assert tracker.update([make_face("A", 100, 200), make_face("B", 300, 200)], k / FPS) == []
        assert tracker.update([], 15 / FPS) == []
        assert not any(tr.selected for tr in tracker.tracks)


def test_embeddings_are_computed_lazily():
    emb = Embedder()
    tracker = Tracker("largest", embed=emb, embed_refresh_s=0.5)
    for k in range(60):  # A selected; C far away and never ambiguous; two seconds
        tracker.update([make_face("A", 150, 200, 120), make_face("C", 600, 200, 80)], k / FPS)
    assert emb.calls.get("C", 0) == 0
    assert emb.calls["A"] == 3 + 3  # three to start, then once every half second (the first at 0.567 s)
    assert Tracker("all").update([make_face("A", 100, 100)], 0.0)  # no embedder at all: fine


# --------------------------------------------------------------------------- smoothing


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def test_smoothing_reduces_jitter_with_bounded_lag():
    rng = np.random.default_rng(11)
    tracker = Tracker("largest")
    err = {"raw_k": [], "raw_l": [], "k": [], "l": []}
    for k in range(150):
        t = k / FPS
        cx, cy = 320 + 40 * np.sin(2 * np.pi * 0.25 * t), 240 + 15 * np.cos(2 * np.pi * 0.2 * t)
        truth = make_face("A", cx, cy, 200)
        noisy = make_face("A", cx, cy, 200, noise=2.0, rng=rng)
        (tf,) = tracker.update([noisy], t)
        if k >= 15:
            err["raw_k"].append(noisy.kps - truth.kps)
            err["raw_l"].append(noisy.landmarks - truth.landmarks)
            err["k"].append(tf.face.kps - truth.kps)
            err["l"].append(tf.face.landmarks - truth.landmarks)
    assert _rms(err["k"]) < 0.6 * _rms(err["raw_k"]), (_rms(err["k"]), _rms(err["raw_k"]))
    assert _rms(err["l"]) < 0.6 * _rms(err["raw_l"]), (_rms(err["l"]), _rms(err["raw_l"]))

    # Steady motion (one face size per second), no noise, then a sudden stop:
    # lag while moving and overshoot after stopping stay within 2 % of the face.
    tracker = Tracker("largest")
    worst = 0.0
    for k in range(90):
        truth = make_face("A", 100 + 200 * min(k, 45) / FPS, 240, 200)
        (tf,) = tracker.update([truth], k / FPS)
        if k >= 20:
            worst = max(worst, float(np.abs(tf.face.landmarks - truth.landmarks).max()),
                        float(np.abs(tf.face.kps - truth.kps).max()))
    assert worst < 0.02 * 200, worst


def test_outputs_are_new_faces_and_inputs_untouched():
    tracker = Tracker("all")
    f0 = make_face("A", 100, 100)
    tracker.update([f0], 0.0)
    f1 = make_face("A", 104, 101)
    kps, lmk = f1.kps.copy(), f1.landmarks.copy()
    out = tracker.update([f1], 1 / FPS)
    assert out[0].face is not f1
    np.testing.assert_array_equal(f1.kps, kps)
    np.testing.assert_array_equal(f1.landmarks, lmk)
    assert out[0].face.kps.shape == (5, 2) and out[0].face.landmarks.shape == (106, 2)
    assert out[0].face.extra["track"] == out[0].track.id


def test_landmarks_are_computed_lazily_for_swapped_faces_only():
    asked = []

    def landmarks(face: Face) -> np.ndarray:
        asked.append(face.extra["who"])
        return make_face(face.extra["who"], *face.center, size=face.size).landmarks

    tracker = Tracker("largest", landmarks=landmarks)
    for k in range(5):
        faces = [make_face("A", 150, 200, 120), make_face("C", 500, 200, 80)]
        for f in faces:
            f.landmarks = None
        out = tracker.update(faces, k / FPS)
        assert out[0].face.landmarks is not None
    assert set(asked) == {"A"}


def test_jump_resets_filters():
    tracker = Tracker("all")
    for k in range(20):
        tracker.update([make_face("A", 100, 100)], k / FPS)
    far = make_face("A", 152, 100)  # 0.52 face sizes in one frame: still the same track, but a jump
    (tf,) = tracker.update([far], 20 / FPS)
    assert tf.track.hits == 21
    np.testing.assert_allclose(tf.face.landmarks, far.landmarks, atol=1e-3)
    np.testing.assert_allclose(tf.face.kps, far.kps, atol=1e-3)


def test_face_smoother_is_exact_at_rest_and_follows_a_similarity():
    p = SmoothingParams()
    f = make_face("A", 50, 60, 80)
    for lmk in (f.landmarks, None):
        sm = FaceSmoother(p.pose, p.shape)
        k0, l0 = sm(f.kps, lmk, 0.0, 80)
        np.testing.assert_allclose(k0, f.kps, atol=1e-4)
        assert (l0 is None) == (lmk is None)
        # Rotation + scale + shift of the same face, held: converges to it exactly.
        ang = 0.3
        r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        move = lambda pts: (pts - [50, 60]) @ r.T * 1.2 + [200, 100]  # noqa: E731
        for k in range(1, 100):
            got_k, got_l = sm(move(f.kps), None if lmk is None else move(lmk), k * 0.1, 96)
        np.testing.assert_allclose(got_k, move(f.kps), atol=0.05)
        if lmk is not None:
            np.testing.assert_allclose(got_l, move(lmk), atol=0.05)


# --------------------------------------------------------------------------- mask


def test_mask_offset_moves_over_a_few_frames():
    m = MaskSmoother(tau=0.15)
    assert m.params() is None
    for k in range(10):
        m.update(0.0, k / FPS)
    p0 = m.params()
    m.update(8.0, 10 / FPS)
    assert 0.5 < m.offset < 4.0  # moved, not instantly
    for k in range(11, 30):
        m.update(8.0, k / FPS)
    assert m.offset > 7.5 and m.params() != p0 and m.params() == params_for(8.0)  # not frozen


def test_params_continuous_matches_classes_inside_and_ramps_at_limits():
    for off in (-8.0, -5.0, 0.0, 1.9, 4.5, 9.0):
        assert params_continuous(off) == params_for(off)
    xs = np.linspace(-6, 9, 301)
    sig = np.array([params_continuous(x).sigma_x for x in xs])
    assert np.max(np.abs(np.diff(sig))) < 0.5  # no 5-px step anywhere
    er = [params_continuous(x).erode for x in xs]
    assert all(isinstance(e, int) for e in er) and er == sorted(er)


def test_track_mask_params_follow_reported_offsets():
    tracker = Tracker("all")
    offsets, chosen = [], []
    for k in range(20):
        (tf,) = tracker.update([make_face("A", 100, 100)], k / FPS)
        assert (tf.track.mask_params() is None) == (k == 0)
        # as the blend does: called with this frame's raw offset (twice must not count twice)
        raw = -6.0 if k < 10 else 7.0
        chosen.append(tf.track.mask_params(raw))
        assert tf.track.mask_params(raw) == chosen[-1]
        offsets.append(tf.track.mask.offset)
    assert offsets[9] == -6.0 and -6.0 < offsets[10] < 0.0 and offsets[19] > 5.0
    assert chosen[0] == chosen[9] == params_for(-6.0) and chosen[19].erode >= 10
    assert len({p.erode for p in chosen}) > 2  # passed through intermediate masks, no jump


def test_update_mask_after_the_fact_and_summary():
    tracker = Tracker("largest")
    for k in range(12):
        faces = [] if k == 5 else [make_face("A", 100, 100)]
        out = tracker.update(faces, k / FPS)
        for tf in out:
            tf.track.update_mask(4.0)
    tracker.update([make_face("B", 400, 100, 50)], 12 / FPS)  # a one-frame blip
    (rec,) = tracker.summary()
    assert rec["frames"] == 11 and rec["swapped"] == 13 and rec["bridged"] == 2  # k=5 and k=12 bridged
    assert rec["first_t"] == 0.0 and rec["last_t"] == round(11 / FPS, 3)
    assert tracker.tracks[0].mask.offset == 4.0


# --------------------------------------------------------------------------- VFR


def test_one_euro_lag_is_frame_rate_independent():
    v = 100.0  # px/s ramp
    p = dict(min_cutoff=1.0, beta=0.02, d_cutoff=1.0)
    expected = v / (2 * np.pi * (p["min_cutoff"] + p["beta"] * v))
    rng = np.random.default_rng(5)
    for times in (np.arange(0, 5, 1 / 30), np.cumsum(rng.choice([1 / 60, 1 / 24, 1 / 15], size=200))):
        f = OneEuroFilter(**p)
        for t in times:
            y = f(np.array([[v * t, 0.0]]), float(t))
        assert abs((v * times[-1] - y[0, 0]) - expected) < 0.05 * expected


def test_vfr_timestamps_and_odd_times_work():
    rng = np.random.default_rng(2)
    times = np.cumsum(rng.choice([1 / 60, 1 / 30, 1 / 12], size=80))
    tracker = Tracker("all")
    ids = set()
    for t in times:
        out = tracker.update([make_face("A", 100 + 120 * t, 200)], float(t))
        ids |= {tf.track.id for tf in out}
    assert len(ids) == 1
    # the mask EMA depends on seconds, not frames
    for fps in (20.0, 60.0):
        m = MaskSmoother(tau=0.15)
        m.update(0.0, 0.0)
        for k in range(1, int(round(0.15 * fps)) + 1):
            m.update(1.0, k / fps)
        assert m.offset == pytest.approx(1 - np.exp(-1), abs=0.02)
    # repeated and backwards timestamps do not crash
    tracker.update([make_face("A", 300, 200)], float(times[-1]))
    tracker.update([make_face("A", 300, 200)], 0.0)


def test_greedy_fallback_without_scipy(monkeypatch):
    import swapcli.select.tracking as tracking

    monkeypatch.setattr(tracking, "_lsa", None)
    test_identity_stays_on_its_track_through_motion_and_crossing()


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])
