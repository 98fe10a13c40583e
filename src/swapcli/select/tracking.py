"""Face tracks for video: which faces to swap, stable over time, and smoothed.

Per-frame selection (``select.faces``) flickers in video: a face missed for
one frame is not swapped, a passer-by briefly larger than the subject is
swapped instead, and raw keypoints jitter. Here selection is made per TRACK
and kept with hysteresis, single-frame misses are bridged, and keypoints,
landmarks and the GHOST mask parameters are smoothed per track. Everything is
streaming (bounded state per live track) and time-based (timestamps in
seconds), so variable-frame-rate video behaves like constant-rate video.

GHOST's video bugs this avoids: mask parameters frozen at the first frame
(here an exponential moving average of the outline offset, per track), a frame
with no face shifting later tracks out of step (``update([], t)`` just ages
the tracks), and a reference that never matches crashing the run (nothing is
selected; ``update`` returns ``[]``).

Per frame the video pipeline calls ``Tracker.update(faces, t, embed=...,
landmarks=...)`` and swaps the returned faces; see ``Tracker`` for the loop.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np

from swapcli.analyse.face import Face
from swapcli.blend.ghost_mask import MaskParams, params_for
from swapcli.core.geometry import apply, similarity
from swapcli.select.faces import order_key, parse_face_order, parse_faces

try:  # scipy comes with insightface; keep a fallback so tracking never hard-depends on it
    from scipy.optimize import linear_sum_assignment as _lsa
except ImportError:  # pragma: no cover - exercised only without scipy
    _lsa = None

Embedder = Callable[[Face], np.ndarray]
Landmarker = Callable[[Face], np.ndarray]

__all__ = [
    "OneEuroParams",
    "OneEuroFilter",
    "FaceSmoother",
    "SmoothingParams",
    "MaskSmoother",
    "params_continuous",
    "Track",
    "TrackedFace",
    "Tracker",
    "iou_matrix",
]


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class OneEuroParams:
    """One-Euro settings. Cutoffs in Hz; beta per unit of speed (see ``OneEuroFilter``)."""

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0
    lead: float = 0.0


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) over an array of points, vectorised.

    Low cutoff (strong smoothing) while still, rising with speed so fast
    motion is followed with little lag. For arrays of shape (..., 2) a point's
    x and y share one cutoff from the point's speed (no direction-dependent
    lag); other shapes use each element's own speed. ``scale`` divides the
    speed, so with ``scale=face size`` ``beta`` is per face-size/s and the same
    settings work for small and large faces. Timestamps are seconds, so
    variable frame rates are handled; a repeated timestamp returns the current
    estimate unchanged, an earlier one (a seek) restarts the filter.

    ``lead`` (0 = the classic filter) adds ``lead`` times the filter's own
    steady-state lag, ``speed / (2 pi cutoff)``, to the output: no lag on
    constant motion, at the price of a small overshoot when motion stops and
    of passing some derivative noise, so it is only worth it on low-noise
    inputs such as a pose fitted over many points.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, lead: float = 0.0) -> None:
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.lead = float(lead)
        self.reset()

    @classmethod
    def from_params(cls, p: OneEuroParams) -> OneEuroFilter:
        return cls(p.min_cutoff, p.beta, p.d_cutoff, p.lead)

    def reset(self) -> None:
        """Forget the state; the next sample is passed through unchanged."""
        self._x: np.ndarray | None = None
        self._raw: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @property
    def value(self) -> np.ndarray | None:
        return None if self._x is None else self._x.copy()

    @property
    def derivative(self) -> np.ndarray | None:
        """Smoothed velocity (units per second), used to extrapolate bridged frames."""
        return None if self._dx is None else self._dx.copy()

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape or (self._t is not None and t < self._t):
            self._x, self._raw, self._dx, self._t = x.copy(), x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if dt <= 0.0:
            return self._x.copy()
        # Speed from the previous RAW sample (the paper uses the filtered one, which
        # adds lag/dt and so makes the cutoff depend on the frame rate).
        dx = (x - self._raw) / dt
        self._raw = x.copy()
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        if x.ndim >= 2 and x.shape[-1] == 2:
            speed = np.linalg.norm(self._dx, axis=-1, keepdims=True)
        else:
            speed = np.abs(self._dx)
        cutoff = self.min_cutoff + self.beta * speed / max(float(scale), 1e-9)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = float(t)
        if self.lead:
            return self._x + self.lead * self._dx / (2.0 * math.pi * cutoff)
        return self._x.copy()


# Canonical anchor points (in face sizes) whose smoothed positions carry the rigid pose.
_ANCHORS = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]])


def _invert(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, (-a @ m[:, 2])[:, None]])


class FaceSmoother:
    """Smooth a face's kps and landmarks as one rigid pose + shapes in the face's own frame.

    A plain per-point filter lets jitter through whenever the head moves (its
    cutoff rises with speed) and lags behind steady motion. Splitting the
    motion fixes both: the similarity (shift, rotation, scale) fitted over all
    106 landmarks averages the per-point noise away, so it can get a
    responsive filter with lag compensation (``lead``); the points expressed
    in that face frame (canonical units of face size, so settings do not
    depend on resolution) only move with expression and head turns and get
    their own filter. The 5 kps are expressed in the same frame, so they share
    the well-estimated pose instead of one fitted to 5 noisy points, and stay
    consistent with the landmarks. Without landmarks the pose comes from the
    kps. With no filtering everything recombines to the input exactly; the
    canonical frame is fixed by the first sample after a reset, so it cannot
    drift.
    """

    def __init__(self, pose: OneEuroParams, shape: OneEuroParams) -> None:
        self._pose = OneEuroFilter.from_params(pose)
        self._kps = OneEuroFilter.from_params(shape)
        self._lmk = OneEuroFilter.from_params(shape)
        self._ref: np.ndarray | None = None  # canonical points the pose is fitted to
        self._with_landmarks = False

    def reset(self) -> None:
        self._pose.reset()
        self._kps.reset()
        self._lmk.reset()
        self._ref = None

    def __call__(
        self, kps: np.ndarray, landmarks: np.ndarray | None, t: float, size: float
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Smoothed (kps, landmarks) for this frame; landmarks None in, None out."""
        k = np.asarray(kps, dtype=np.float64)
        lm = None if landmarks is None else np.asarray(landmarks, dtype=np.float64)
        fit = k if lm is None else lm
        size = max(float(size), 1e-6)
        if self._ref is None or self._ref.shape != fit.shape or self._with_landmarks != (lm is not None):
            self.reset()  # the pose source changed (e.g. landmarks start when a track is selected)
            self._ref = (fit - fit.mean(0)) / size
            self._with_landmarks = lm is not None
        m = similarity(self._ref, fit)  # canonical -> image
        inv = _invert(m)
        anchors = self._pose(apply(m, _ANCHORS), t, scale=size)
        pose = similarity(_ANCHORS, anchors)
        k_out = apply(pose, self._kps(apply(inv, k), t))
        l_out = None if lm is None else apply(pose, self._lmk(apply(inv, lm), t))
        return k_out, l_out


@dataclass(frozen=True)
class SmoothingParams:
    """Filter settings; speeds are in face sizes per second, times in seconds.

    Defaults were set on synthetic 30 fps tracks with ~1 % of face size of
    per-point noise: jitter drops to ~0.4x (kps and landmarks) at rest and
    in slow motion; steady motion has no lag (the pose filter leads) and a
    sudden stop from one face size per second overshoots by ~1.3 % of the
    face size. Head turns are followed by the shape filter, whose speed-
    dependent cutoff trades a little lag during the turn for calm at rest.
    """

    pose: OneEuroParams = OneEuroParams(min_cutoff=2.0, beta=8.0, d_cutoff=1.0, lead=1.0)
    shape: OneEuroParams = OneEuroParams(min_cutoff=0.7, beta=10.0, d_cutoff=1.0)
    bbox: OneEuroParams = OneEuroParams(min_cutoff=2.0, beta=8.0, d_cutoff=1.0, lead=1.0)
    mask_tau: float = 0.15  # EMA time constant of the mask outline offset
    mask_continuous: bool = True  # see params_continuous


# --------------------------------------------------------------------------- mask


def params_continuous(offset: float, band: float = 1.0) -> MaskParams:
    """``params_for`` with the steps between classes replaced by linear ramps.

    Inside each class (more than ``band`` from the class limits -3, 3 and 6)
    this equals ``params_for`` exactly, so steady faces get GHOST's tuned
    values; near a limit the parameters blend instead of jumping, so a
    smoothed offset drifting across a limit does not make the mask pop.
    ``erode`` stays an int (224-crop pixels; one pixel is below visibility).
    """
    band = min(max(band, 1e-6), 1.5)  # bands must not overlap (limits 3 and 6 are 3 apart)
    for limit in (-3.0, 3.0, 6.0):
        lo, hi = limit - band, limit + band
        if lo <= offset <= hi:
            a, b = params_for(lo), params_for(hi)
            w = (offset - lo) / (hi - lo)
            mix = lambda u, v: (1.0 - w) * u + w * v  # noqa: E731
            return MaskParams(
                int(round(mix(a.erode, b.erode))),
                float(mix(a.sigma_x, b.sigma_x)),
                float(mix(a.sigma_y, b.sigma_y)),
                float(mix(a.lift, b.lift)),
            )
    return params_for(offset)


@dataclass
class MaskSmoother:
    """Per-track GHOST outline offset, smoothed with a time-based EMA.

    GHOST chose mask parameters once, at the first frame, so they were wrong
    for the rest of the shot; choosing them per frame flickers between
    classes. The offset here follows new values with time constant ``tau``
    seconds (~63 % of a step after ``tau``), independent of frame rate.
    ``continuous`` picks ``params_continuous`` (default, no pops at class
    limits) or GHOST's stepwise ``params_for``.
    """

    tau: float = 0.15
    continuous: bool = True
    offset: float | None = None
    t: float | None = None

    def update(self, offset: float, t: float) -> float:
        if self.offset is None or self.t is None or t < self.t:
            self.offset, self.t = float(offset), float(t)
        elif t > self.t:
            a = 1.0 - math.exp(-(t - self.t) / max(self.tau, 1e-9))
            self.offset += a * (float(offset) - self.offset)
            self.t = float(t)
        return self.offset

    def params(self) -> MaskParams | None:
        """None until an offset was seen: then the blend picks from the frame itself."""
        if self.offset is None:
            return None
        return params_continuous(self.offset) if self.continuous else params_for(self.offset)


# --------------------------------------------------------------------------- tracks


@dataclass
class Track:
    """One person over time. Filters and mask state belong to the track, not the frame."""

    id: int
    bbox: np.ndarray  # last detected box (raw)
    face: Face  # last detected face (raw)
    t: float  # time of the last detection, seconds
    first_x: float  # box centre x at first appearance
    smoother: FaceSmoother  # kps + landmarks
    bbox_filter: OneEuroFilter
    mask: MaskSmoother
    embedding: np.ndarray | None = None  # running mean, L2-normalised; confident frames only (after the first)
    embed_count: int = 0
    embed_t: float = 0.0  # time the embedding was last updated, seconds
    age: int = 1  # frames since the track was created (including misses)
    hits: int = 1  # frames it was detected in
    misses: int = 0  # consecutive frames without a detection
    selected: bool = False
    match: float | None = None  # best cosine of `embedding` to the references
    assigned: int | None = None  # index of the best-matching reference / mapping
    smoothed: Face | None = None  # last output face (smoothed), basis of bridged frames
    frame_t: float = 0.0  # time of the frame last given to the tracker
    areas: deque = field(default_factory=lambda: deque(maxlen=60))

    @property
    def median_area(self) -> float:
        return float(np.median(self.areas)) if self.areas else 0.0

    @property
    def velocity(self) -> np.ndarray:
        """Smoothed box-centre velocity, px/s."""
        d = self.bbox_filter.derivative
        return np.zeros(2) if d is None else d.reshape(2, 2).mean(0)

    def mask_params(self, offset: float | None = None) -> MaskParams | None:
        """Smoothed mask parameters; pass the bound method as the blend's ``params`` callable.

        The blend calls it with this frame's raw outline offset, which is
        folded into the track's EMA first (so no frame lags behind); repeated
        calls within one frame do not count twice. Without an offset it just
        reports the current parameters (None before any offset was seen).
        """
        if offset is not None:
            self.mask.update(offset, self.frame_t)
        return self.mask.params()

    def mask_params_at(self, t: float) -> Callable[[float | None], MaskParams | None]:
        """``mask_params`` for the frame at time ``t``, for a blend that runs later (batched
        video: the track has moved on by then; the offset must still count at ``t``)."""

        def params(offset: float | None = None) -> MaskParams | None:
            if offset is not None:
                self.mask.update(offset, t)
            return self.mask.params()

        return params

    def update_mask(self, offset: float, t: float | None = None) -> float:
        """Feed a raw outline offset after the fact (when the blend took fixed ``MaskParams``)."""
        return self.mask.update(offset, self.frame_t if t is None else t)

    def add_embedding(self, vec: np.ndarray) -> None:
        """Running mean of unit embeddings; after 30 samples it becomes an EMA so it can follow ageing/lighting."""
        v = np.asarray(vec, dtype=np.float64).ravel()
        v = v / (np.linalg.norm(v) + 1e-12)
        if self.embedding is None:
            mean = v
        else:
            w = 1.0 / min(self.embed_count + 1, 30)
            mean = (1.0 - w) * self.embedding + w * v
        self.embedding = (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)
        self.embed_count += 1
        self.embed_t = self.t


class TrackedFace(NamedTuple):
    """A face to swap this frame: its track, a NEW smoothed Face, and whether it was bridged over a miss."""

    track: Track
    face: Face
    bridged: bool


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _assign(cost: np.ndarray, limit: float) -> list[tuple[int, int]]:
    """Minimum-cost matching; pairs costing >= limit are infeasible."""
    if cost.size == 0:
        return []
    if _lsa is not None:
        rows, cols = _lsa(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] < limit]
    pairs, used_r, used_c = [], set(), set()  # greedy fallback: fine for a handful of faces
    for flat in np.argsort(cost, axis=None):
        r, c = divmod(int(flat), cost.shape[1])
        if cost[r, c] >= limit:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _centre(bbox: np.ndarray) -> np.ndarray:
    return np.array([(bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0], dtype=np.float64)


def _size(bbox: np.ndarray) -> float:
    return float(max(min(bbox[2] - bbox[0], bbox[3] - bbox[1]), 1.0))


class Tracker:
    """Associates detections into tracks, selects tracks and smooths them.

    Streaming use, one call per decoded frame, in order, including frames
    with no face (they age the tracks; skipping them would put later tracks
    out of step)::

        tracker = Tracker(select, references, threshold, max_misses=max(10, round(fps)))
        for frame, t in frames:                    # t: the frame's pts in seconds
            faces = swapper.detect(frame)          # on the untouched frame
            todo = tracker.update(faces, t,        # embeds / landmarks run here, before any paste
                                  embed=lambda f: swapper.embed(frame, f),
                                  landmarks=lambda f: swapper.landmarks(frame, f))
            for tf in todo:
                srcs = [sources[tf.track.assigned]] if mapped else sources   # --map: reference i -> source i
                swapper.swap_face(frame, tf.face, srcs, params=tf.track.mask_params)  # offset -> smoothed
        report["tracks"] = tracker.summary()

    ``max_misses`` is how long (frames) a track survives unseen and keeps a
    'largest'/N selection; about one second of frames suits most video.
    ``select`` is 'largest', 'all' or N (0 = leftmost, as ``--faces``). With ``references`` a track is a candidate only while the
    running mean of its embedding matches one (cosine >= threshold); the
    ``select`` rule then picks among candidates, so pass 'all' for --map.

    Selection rules (per track, not per frame):
      * largest: the live track with the largest median box area (last 60
        detections); sticky: another track takes over only after being more
        than ``switch_ratio`` larger for ``switch_frames`` consecutive frames,
        or when the holder has been missing for more than ``max_misses``.
      * all: every candidate track.
      * N: the track that was N-th in ``order`` (--face-order, default left to right) in the
        first frame with more than N candidate faces visible; held for the track's life (re-found
        after a turn-away by embedding), re-chosen the same way if it ends.
        Locking at first appearance keeps people crossing each other from
        swapping the index.

    Association: Hungarian on ``1 - IoU`` (box predicted with the track's
    velocity) gated at ``iou_threshold``, plus ``embed_weight * (1 - cosine)``
    when both sides have an embedding; a cosine below ``veto`` forbids the
    pair (a passer-by overlapping the subject). Embeddings are computed
    lazily: for references, for selected tracks (once ``embed_refresh_s``
    seconds once 3 samples exist, so lost tracks can be re-identified: the
    embedder costs as much as the landmarks, and an identity does not change
    between frames), for
    detections in ambiguous overlaps, and for unmatched detections while a
    lost track with an embedding exists (re-identification at cosine >=
    ``threshold``). Lost tracks with an embedding are kept ``keep_lost_s``
    seconds for re-identification; others end after ``max_misses``.

    Bridging: a selected track missed for 1..``bridge_frames`` consecutive
    frames is still returned, its last smoothed face moved along its velocity
    (at most half a face size), ``bridged=True``; then it stops being swapped
    until re-detected. Filters reset when a track is re-found after longer
    gaps or its box jumps by more than half a face size.
    """

    def __init__(
        self,
        select: str | int = "largest",
        references: Sequence[np.ndarray] | None = None,
        threshold: float = 0.3,
        max_misses: int = 10,
        iou_threshold: float = 0.3,
        embed: Embedder | None = None,
        *,
        landmarks: Landmarker | None = None,
        bridge_frames: int = 2,
        switch_ratio: float = 1.3,
        switch_frames: int = 8,
        embed_weight: float = 0.5,
        veto: float = 0.1,
        embed_refresh_s: float = 1.0,
        min_embed_score: float = 0.6,
        keep_lost_s: float = 3.0,
        min_hits: int = 1,
        smoothing: SmoothingParams | None = None,
        order: str = "left-right",
    ) -> None:
        self.mode = parse_faces(str(select))
        self.order = parse_face_order(order)
        self.references = [np.asarray(r, dtype=np.float32).ravel() for r in references] if references else []
        self.threshold = float(threshold)
        self.max_misses = int(max_misses)
        self.iou_threshold = float(iou_threshold)
        self.embed = embed
        self.landmarks = landmarks
        self.bridge_frames = int(bridge_frames)
        self.switch_ratio = float(switch_ratio)
        self.switch_frames = int(switch_frames)
        self.embed_weight = float(embed_weight)
        self.veto = float(veto)
        self.embed_refresh_s = float(embed_refresh_s)
        self.min_embed_score = float(min_embed_score)
        self.keep_lost_s = float(keep_lost_s)
        self.min_hits = max(1, int(min_hits))
        self.smoothing = smoothing or SmoothingParams()
        self.tracks: list[Track] = []
        self.t: float | None = None
        self.frame = 0
        self._next_id = 0
        self._holder: int | None = None  # largest / N: id of the track holding the selection
        self._challenger: tuple[int, int] | None = None  # (track id, consecutive frames larger)
        self._records: dict[int, dict] = {}  # per-track report, kept after the track ends

    # ------------------------------------------------------------------ public

    def update(
        self,
        faces: Sequence[Face],
        t: float,
        embed: Embedder | None = None,
        landmarks: Landmarker | None = None,
    ) -> list[TrackedFace]:
        """Feed one frame's detections (time ``t`` in seconds); return the faces to swap, left to right.

        ``embed``/``landmarks`` override the constructor's callables for this
        frame (they usually close over the current frame). Input faces are
        not modified except that a computed embedding is stored on the face,
        as the analyser does.
        """
        embed = embed or self.embed
        landmarks = landmarks or self.landmarks
        self.t = float(t)
        self.frame += 1
        faces = list(faces)
        for tr in self.tracks:
            tr.age += 1
            tr.frame_t = self.t

        emb: dict[int, np.ndarray] = {i: f.embedding for i, f in enumerate(faces) if f.embedding is not None}

        def get_emb(i: int) -> np.ndarray | None:
            if i not in emb and embed is not None:
                vec = np.asarray(embed(faces[i]), dtype=np.float32).ravel()
                vec = vec / (np.linalg.norm(vec) + 1e-12)
                if faces[i].embedding is None:
                    faces[i].embedding = vec
                emb[i] = vec
            return emb.get(i)

        live = [tr for tr in self.tracks if tr.misses <= self.max_misses]
        pairs = self._associate(live, faces, emb, get_emb, embed is not None)
        matched_t = {live[r].id for r, _ in pairs}
        matched_d = {c for _, c in pairs}

        for r, c in pairs:
            self._hit(live[r], faces[c], c, emb, get_emb)
        for tr in self.tracks:
            if tr.id not in matched_t:
                tr.misses += 1

        # Re-identification of lost tracks, then new tracks.
        unmatched = [i for i in range(len(faces)) if i not in matched_d]
        lost = [tr for tr in self.tracks if tr.misses >= 1 and tr.embedding is not None]
        if unmatched and lost and (embed is not None or any(i in emb for i in unmatched)):
            scored = []
            for i in unmatched:
                v = get_emb(i)
                if v is not None:
                    scored += [(_cos(v, tr.embedding), i, tr) for tr in lost]
            used_d, used_t = set(), set()
            for score, i, tr in sorted(scored, key=lambda s: -s[0]):
                if score < self.threshold or i in used_d or tr.id in used_t:
                    continue
                used_d.add(i)
                used_t.add(tr.id)
                tr.misses = self.bridge_frames + 1  # forces a filter reset: the face moved unseen
                self._hit(tr, faces[i], i, emb, get_emb)
            unmatched = [i for i in unmatched if i not in used_d]
        for i in unmatched:
            if self.references and embed is not None:
                get_emb(i)
            self._new_track(faces[i], emb.get(i))

        self._prune()
        self._select()

        out: list[TrackedFace] = []
        for tr in self.tracks:
            if tr.misses == 0:  # detected now: smooth (landmarks only where they will be used)
                self._smooth(tr, landmarks)
            if not tr.selected:
                continue
            if tr.misses == 0:
                out.append(TrackedFace(tr, tr.smoothed, False))
            elif tr.misses <= self.bridge_frames and tr.smoothed is not None:
                out.append(TrackedFace(tr, self._bridge(tr), True))
        self._record(out)
        out.sort(key=lambda tf: float(tf.face.bbox[0] + tf.face.bbox[2]))
        return out

    def summary(self) -> list[dict]:
        """JSON-ready report of the tracks seen so far (one-frame blips left out), by id.

        Kept as small records after tracks end, so a long video's report is
        complete without keeping the tracks themselves.
        """
        return [dict(r) for _, r in sorted(self._records.items()) if r["frames"] >= 2 or r["swapped"]]

    def _record(self, out: list[TrackedFace]) -> None:
        for tr in self.tracks:
            if tr.misses == 0:
                r = self._records.setdefault(tr.id, {
                    "id": tr.id, "first_t": round(self.t, 3), "last_t": 0.0, "frames": 0,
                    "swapped": 0, "bridged": 0, "match": None, "assigned": None})
                r["last_t"] = round(self.t, 3)
                r["frames"] = tr.hits
                r["match"] = None if tr.match is None else round(tr.match, 4)
                r["assigned"] = tr.assigned
        for tf in out:
            r = self._records.get(tf.track.id)
            if r is not None:
                r["swapped"] += 1
                r["bridged"] += int(tf.bridged)

    def reset(self) -> None:
        """Forget every track (e.g. at a scene cut or a seek)."""
        self.tracks.clear()
        self._holder = None
        self._challenger = None

    # ------------------------------------------------------------------ association

    def _predict(self, tr: Track) -> np.ndarray:
        """Box moved along the track's velocity; only over short gaps, where velocity is still meaningful."""
        if tr.misses > self.bridge_frames:
            return tr.bbox.astype(np.float64)
        shift = tr.velocity * max(self.t - tr.t, 0.0)
        cap = 0.5 * _size(tr.bbox)
        n = float(np.linalg.norm(shift))
        if n > cap:
            shift *= cap / n
        return tr.bbox.astype(np.float64) + np.tile(shift, 2)

    def _associate(
        self,
        live: list[Track],
        faces: list[Face],
        emb: dict[int, np.ndarray],
        get_emb: Callable[[int], np.ndarray | None],
        can_embed: bool,
    ) -> list[tuple[int, int]]:
        if not live or not faces:
            return []
        pred = np.array([self._predict(tr) for tr in live])
        boxes = np.array([f.bbox for f in faces], dtype=np.float64)
        iou = iou_matrix(pred, boxes)
        feasible = iou >= self.iou_threshold

        if can_embed:
            need: set[int] = set()
            # Ambiguous overlaps: a detection near two tracks, or a track near two detections.
            per_det = feasible.sum(0)
            per_trk = feasible.sum(1)
            for r, c in zip(*np.nonzero(feasible)):
                if per_det[c] >= 2 or per_trk[r] >= 2:
                    need.add(int(c))
            # Weak overlaps with a track whose identity we know, and embedding refreshes.
            first = _assign(np.where(feasible, 1.0 - iou, 1e6), 1e6)
            for r, c in first:
                tr = live[r]
                if tr.embedding is not None and iou[r, c] < 0.5:
                    need.add(c)
                if self._wants_embedding(tr, faces[c]):
                    need.add(c)
            for c in sorted(need):
                get_emb(c)

        cost = np.where(feasible, 1.0 - iou, 1e6)
        for r, tr in enumerate(live):
            if tr.embedding is None:
                continue
            for c in np.nonzero(feasible[r])[0]:
                v = emb.get(int(c))
                if v is None:
                    continue
                s = _cos(v, tr.embedding)
                cost[r, c] = 1e6 if s < self.veto else cost[r, c] + self.embed_weight * (1.0 - s)
        return _assign(cost, 1e6)

    def _confident(self, face: Face) -> bool:
        """Frames good enough to shape a track's identity: sure detection, roughly frontal."""
        if face.score < self.min_embed_score:
            return False
        k = np.asarray(face.kps, dtype=np.float64)
        eyes = k[1] - k[0]
        d = float(np.linalg.norm(eyes))
        if d < 1e-6:
            return False
        yaw = float(np.dot(k[2] - (k[0] + k[1]) / 2.0, eyes) / (d * d))
        return abs(yaw) < 0.35

    def _wants_embedding(self, tr: Track, face: Face) -> bool:
        if not (self.references or tr.selected):
            return False
        if tr.embedding is None:
            return True
        if not self._confident(face):
            return False
        return tr.embed_count < 3 or self.t - tr.embed_t >= self.embed_refresh_s

    # ------------------------------------------------------------------ track upkeep

    def _new_track(self, face: Face, vec: np.ndarray | None) -> Track:
        sm = self.smoothing
        tr = Track(
            id=self._next_id,
            bbox=np.asarray(face.bbox, dtype=np.float32).copy(),
            face=face,
            t=self.t,
            first_x=float(_centre(face.bbox)[0]),
            smoother=FaceSmoother(sm.pose, sm.shape),
            bbox_filter=OneEuroFilter.from_params(sm.bbox),
            mask=MaskSmoother(sm.mask_tau, sm.mask_continuous),
            frame_t=self.t,
        )
        self._next_id += 1
        tr.areas.append(face.area)
        if vec is not None:
            tr.add_embedding(vec)
            self._match(tr)
        self.tracks.append(tr)
        return tr

    def _hit(
        self, tr: Track, face: Face, i: int, emb: dict[int, np.ndarray], get_emb: Callable[[int], np.ndarray | None]
    ) -> None:
        """Detection ``i`` continues ``tr``."""
        jump = float(np.linalg.norm(_centre(face.bbox) - _centre(self._predict(tr)))) > 0.5 * _size(tr.bbox)
        if jump or tr.misses > self.bridge_frames:
            tr.smoother.reset()
            tr.bbox_filter.reset()
        vec = emb.get(i)
        if vec is None and self._wants_embedding(tr, face):
            vec = get_emb(i)
        tr.hits += 1
        tr.misses = 0
        tr.bbox = np.asarray(face.bbox, dtype=np.float32).copy()
        tr.face = face
        tr.t = self.t
        tr.areas.append(face.area)
        if vec is not None and (tr.embedding is None or self._confident(face)):
            tr.add_embedding(vec)
            self._match(tr)

    def _match(self, tr: Track) -> None:
        if not self.references or tr.embedding is None:
            return
        sims = [_cos(tr.embedding, r) for r in self.references]
        best = int(np.argmax(sims))
        tr.match, tr.assigned = float(sims[best]), best

    def _smooth(self, tr: Track, landmarks: Landmarker | None) -> None:
        """Smoothed copy of this frame's detection into ``tr.smoothed`` (a new Face)."""
        face = tr.face
        size = _size(face.bbox)
        raw_lmk = None
        if tr.selected:  # lazily: only faces that are swapped need landmarks
            raw_lmk = face.landmarks
            if raw_lmk is None and landmarks is not None:
                raw_lmk = landmarks(face)
        box = tr.bbox_filter(np.asarray(face.bbox, dtype=np.float64).reshape(2, 2), self.t, scale=size)
        kps, lmk = tr.smoother(face.kps, raw_lmk, self.t, size)
        extra = {**face.extra, "track": tr.id, "bridged": False}
        if tr.match is not None:
            extra["reference_similarity"] = tr.match
        tr.smoothed = Face(
            bbox=box.reshape(4).astype(np.float32),
            score=face.score,
            kps=kps.astype(np.float32),
            landmarks=None if lmk is None else lmk.astype(np.float32),
            embedding=face.embedding,
            extra=extra,
        )

    def _bridge(self, tr: Track) -> Face:
        """Last smoothed face moved along the track's velocity, for a short detection gap."""
        last = tr.smoothed
        shift = tr.velocity * max(self.t - tr.t, 0.0)
        cap = 0.5 * _size(last.bbox)
        n = float(np.linalg.norm(shift))
        if n > cap:
            shift *= cap / n
        s = shift.astype(np.float32)
        return Face(
            bbox=last.bbox + np.tile(s, 2),
            score=last.score,
            kps=last.kps + s,
            landmarks=None if last.landmarks is None else last.landmarks + s,
            embedding=last.embedding,
            extra={**last.extra, "bridged": True},
        )

    def _prune(self) -> None:
        keep = []
        for tr in self.tracks:
            if tr.misses <= self.max_misses:
                keep.append(tr)
            elif tr.embedding is not None and self.t - tr.t <= self.keep_lost_s:
                keep.append(tr)  # kept only for re-identification
        lost = [tr for tr in keep if tr.misses > self.max_misses]
        if len(lost) > 32:  # bound memory on crowded, long videos
            drop = {tr.id for tr in sorted(lost, key=lambda tr: tr.t)[: len(lost) - 32]}
            keep = [tr for tr in keep if tr.id not in drop]
        self.tracks = keep

    # ------------------------------------------------------------------ selection

    def _select(self) -> None:
        cands = []
        for tr in self.tracks:
            if self.references:
                was = tr.selected and tr.match is not None
                # Small hysteresis on the running mean: one doubtful sample does not unselect.
                ok = tr.match is not None and tr.match >= self.threshold - (0.05 if was else 0.0)
            else:
                ok = True
            if ok and tr.hits >= self.min_hits:
                cands.append(tr)
        chosen: set[int] = set()
        if self.mode == "all":
            chosen = {tr.id for tr in cands}
        elif self.mode == "largest":
            chosen = self._select_largest(cands)
        else:
            chosen = self._select_nth(cands, int(self.mode))
        for tr in self.tracks:
            tr.selected = tr.id in chosen

    def _holding(self, cands: list[Track]) -> Track | None:
        for tr in cands:
            if tr.id == self._holder and tr.misses <= self.max_misses:
                return tr
        return None

    def _select_largest(self, cands: list[Track]) -> set[int]:
        visible = [tr for tr in cands if tr.misses == 0]
        holder = self._holding(cands)
        if holder is None:
            self._challenger = None
            if not visible:
                self._holder = None
                return set()
            holder = max(visible, key=lambda tr: tr.median_area)
            self._holder = holder.id
            return {holder.id}
        rivals = [tr for tr in visible if tr.id != holder.id]
        best = max(rivals, key=lambda tr: tr.median_area, default=None)
        if best is not None and best.median_area > self.switch_ratio * holder.median_area:
            n = self._challenger[1] + 1 if self._challenger and self._challenger[0] == best.id else 1
            self._challenger = (best.id, n)
            if n >= self.switch_frames:
                self._holder, self._challenger = best.id, None
                return {best.id}
        else:
            self._challenger = None
        return {holder.id}

    def _select_nth(self, cands: list[Track], n: int) -> set[int]:
        holder = self._holding(cands)
        if holder is not None:
            return {holder.id}
        key = order_key(self.order)
        visible = sorted((tr for tr in cands if tr.misses == 0), key=lambda tr: key(tr.face))
        if len(visible) > n:
            self._holder = visible[n].id
            return {self._holder}
        self._holder = None
        return set()

