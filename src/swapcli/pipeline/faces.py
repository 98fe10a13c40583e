"""swapcli faces: what the detector sees, numbered the way --faces N counts.

Picking `--faces 2` blind means guessing how swapcli numbers faces; this lists
every face with the index that selects it, its box, size, detection score and
head pose, and which faces selection would leave alone (too small), so the
choice is made by looking. Videos are sampled (every Nth frame) and tracked with
the same tracker `swapcli video` uses, so a person is one line, not one per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from swapcli.analyse.face import Face
from swapcli.analyse.insight import InsightAnalyser
from swapcli.core.errors import NoFaceError
from swapcli.core.options import SelectOptions
from swapcli.select.faces import order_faces, order_key, size_filter

THUMB = 112  # px, side of a track's thumbnail on the preview sheet
SAMPLES_PER_SECOND = 5  # default video sampling: a 10 s clip is 50 detector runs


def _box(face: Face) -> list[float]:
    return [round(float(v), 1) for v in face.bbox]


def _pose(face: Face) -> dict:
    from swapcli.analyse.pose import head_pose

    return head_pose(face.kps).to_json()


@dataclass
class FaceInfo:
    """One detected face as selection sees it."""

    index: int | None  # the N of --faces N that swaps it (None: selection skips it)
    bbox: list[float]
    size: float  # shorter side of the box, px (what --min-face-size compares)
    score: float
    pose: dict  # yaw, pitch, roll in degrees, from the five detection points
    largest: bool  # the face --faces largest swaps
    skipped: str | None = None  # why --faces all|N leaves it alone

    def to_json(self) -> dict:
        return {"index": self.index, "bbox": self.bbox, "size": round(self.size, 1), "score": round(self.score, 4),
                "pose": self.pose, "largest": self.largest, "skipped": self.skipped is not None,
                "skip_reason": self.skipped}


@dataclass
class ImageFaces:
    path: Path
    width: int
    height: int
    det_size: int
    face_order: str
    faces: list[FaceInfo]
    found_at: int | None = None  # a smaller detector size that found the faces the configured one missed
    retry_ms: float = 0.0

    def to_json(self) -> dict:
        return {"input": str(self.path), "kind": "image", "width": self.width, "height": self.height,
                "det_size": self.det_size, "found_at_det_size": self.found_at or self.det_size,
                "retried": self.found_at is not None, "retry_ms": round(self.retry_ms, 1),
                "face_order": self.face_order, "faces_found": len(self.faces),
                "faces": [f.to_json() for f in self.faces]}


def describe(faces: list[Face], select: SelectOptions, shape: tuple[int, ...]) -> list[FaceInfo]:
    """Every face in --face-order, with the index --faces N gives it (skipped faces get none)."""
    kept, skipped = size_filter(faces, "all", select.min_size, select.min_share, shape)
    index = {id(f): n for n, f in enumerate(order_faces(kept, select.face_order))}
    why = {tuple(s["bbox"]): s["why"] for s in skipped}
    pool = size_filter(faces, "largest", select.min_size, select.min_share, shape)[0]
    largest = max(pool, key=lambda f: f.area) if pool else None
    return [FaceInfo(index.get(id(f)), _box(f), f.size, float(f.score), _pose(f), f is largest,
                     None if id(f) in index else why.get(tuple(_box(f)), "skipped"))
            for f in order_faces(faces, select.face_order)]


def image_faces(analyser: InsightAnalyser, path: Path, det_size: int,
                select: SelectOptions) -> tuple[ImageFaces, np.ndarray]:
    """The faces of a photo (with the image command's smaller-detector retry) and the picture."""
    from swapcli.pipeline.swapper import find_faces, retry_sizes
    from swapcli.read.image import read_image

    image = read_image(path).bgr
    found = find_faces(analyser, image, det_size)
    if not found.faces:
        tried = ", ".join(map(str, [det_size, *retry_sizes(det_size)]))
        raise NoFaceError(f"{path}: no face found (detector sizes {tried})")
    h, w = image.shape[:2]
    return ImageFaces(Path(path), w, h, det_size, select.face_order, describe(found.faces, select, image.shape),
                      found.retry_size, found.retry_ms), image


# --------------------------------------------------------------------------- video


@dataclass
class TrackInfo:
    """One person over the sampled frames."""

    id: int
    first_frame: int
    last_frame: int
    frames_seen: int  # sampled frames it was detected in
    best: FaceInfo  # its best-scored detection (the thumbnail's)
    thumbnail_frame: int
    thumbnail: np.ndarray = field(repr=False)  # THUMB x THUMB BGR crop around that detection
    indices: list[int] = field(default_factory=list)  # the N of --faces N that picks this track

    def to_json(self) -> dict:
        best = self.best.to_json()
        return {"id": self.id, "index": self.indices[0] if self.indices else None, "indices": self.indices,
                "first_frame": self.first_frame, "last_frame": self.last_frame, "frames_seen": self.frames_seen,
                "thumbnail": {"frame": self.thumbnail_frame, "bbox": best["bbox"]},
                "size": best["size"], "score": best["score"], "pose": best["pose"]}


@dataclass
class VideoFaces:
    path: Path
    width: int
    height: int
    fps: float
    frames: int  # frames decoded
    every: int  # one frame in `every` was analysed
    sampled: int
    det_size: int
    face_order: str
    tracks: list[TrackInfo]
    most_faces: int = 0  # most faces seen in one sampled frame

    def to_json(self) -> dict:
        return {"input": str(self.path), "kind": "video", "width": self.width, "height": self.height,
                "fps": round(self.fps, 3), "frames": self.frames, "every": self.every, "frames_sampled": self.sampled,
                "det_size": self.det_size, "face_order": self.face_order, "most_faces_in_a_frame": self.most_faces,
                "tracks": [t.to_json() for t in self.tracks]}


def default_every(fps: float) -> int:
    return max(1, round(fps / SAMPLES_PER_SECOND))


def thumbnail(frame: np.ndarray, face: Face) -> np.ndarray:
    """A square crop around the face with some margin, THUMB px wide (black beyond the frame)."""
    import cv2

    x0, y0, x1, y1 = face.bbox
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.75 * max(x1 - x0, y1 - y0)
    m = np.array([[THUMB / (2 * half), 0, THUMB / 2 - cx * THUMB / (2 * half)],
                  [0, THUMB / (2 * half), THUMB / 2 - cy * THUMB / (2 * half)]], np.float32)
    return cv2.warpAffine(frame, m, (THUMB, THUMB), flags=cv2.INTER_AREA)


@dataclass
class _Seen:
    first: int
    last: int
    count: int
    score: float
    frame: int
    face: Face
    thumb: np.ndarray


def video_faces(analyser: InsightAnalyser, path: Path, det_size: int, select: SelectOptions,
                every: int | None = None, progress: Callable[[int, int | None], None] | None = None) -> VideoFaces:
    """Tracks of the faces in every `every`-th frame (default: SAMPLES_PER_SECOND a second)."""
    from swapcli.read.video import FrameReader, probe
    from swapcli.select.tracking import Tracker

    info = probe(path)
    fps = float(info.fps) or 25.0
    every = every or default_every(fps)
    tracker = Tracker("all", max_misses=max(2, round(0.4 * fps / every)))  # as swap_video: ~0.4 s unseen
    key = order_key(select.face_order)
    seen: dict[int, _Seen] = {}
    picks: dict[int, int] = {}  # N -> track id: the N-th visible track when first more than N were visible
    sampled = most = index = 0
    with FrameReader(info) as reader:
        total = reader.expected_frames
        for index, frame in enumerate(reader):
            if progress is not None:
                progress(index + 1, total)
            if index % every:
                continue
            sampled += 1
            found = analyser.detect(frame)
            most = max(most, len(found))
            kept, _ = size_filter(found, "all", select.min_size, select.min_share, frame.shape)
            visible = [tf.track for tf in tracker.update(kept, index / fps) if not tf.bridged]
            for track in visible:
                _note(seen, track.id, track.face, index, frame)
            for n, track in enumerate(sorted(visible, key=lambda tr: key(tr.face))):
                picks.setdefault(n, track.id)
        frames = reader.frames_read
    tracks = [_track(tid, s, [n for n, t in sorted(picks.items()) if t == tid]) for tid, s in sorted(seen.items())]
    if not tracks:
        raise NoFaceError(f"{path}: no face found in {sampled} sampled frames (every {every}th of {frames})")
    return VideoFaces(Path(path), info.width, info.height, fps, frames, every, sampled, det_size, select.face_order,
                      tracks, most)


def _note(seen: dict[int, _Seen], tid: int, face: Face, index: int, frame: np.ndarray) -> None:
    s = seen.get(tid)
    if s is None:
        seen[tid] = _Seen(index, index, 1, face.score, index, face, thumbnail(frame, face))
        return
    s.last, s.count = index, s.count + 1
    if face.score > s.score:
        s.score, s.frame, s.face, s.thumb = face.score, index, face, thumbnail(frame, face)


def _track(tid: int, s: _Seen, indices: list[int]) -> TrackInfo:
    best = FaceInfo(indices[0] if indices else None, _box(s.face), s.face.size, float(s.face.score), _pose(s.face),
                    False)
    return TrackInfo(tid, s.first, s.last, s.count, best, s.frame, s.thumb, indices)


# --------------------------------------------------------------------------- preview


def draw_boxes(image: np.ndarray, faces: list[FaceInfo]) -> np.ndarray:
    """A copy of the picture with every face boxed and numbered as --faces N counts
    (green; skipped faces grey with an x)."""
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    scale = max(0.4, min(h, w) / 900)
    for f in faces:
        colour = (80, 220, 80) if f.index is not None else (160, 160, 160)
        x0, y0, x1, y1 = (int(round(v)) for v in f.bbox)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick, cv2.LINE_AA)
        _label(out, str(f.index) if f.index is not None else "x", (x0, y0), colour, scale, thick)
    return out


def _label(image: np.ndarray, text: str, corner: tuple[int, int], colour, scale: float, thick: int) -> None:
    """Text on a dark tag just above (or, at the top edge, inside) a box corner."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x = min(max(0, corner[0]), max(0, image.shape[1] - tw - 4))
    y = corner[1] - 4 if corner[1] - th - base - 4 >= 0 else corner[1] + th + 4
    cv2.rectangle(image, (x, y - th - 3), (x + tw + 4, y + base), (20, 20, 20), -1)
    cv2.putText(image, text, (x + 2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def contact_sheet(tracks: list[TrackInfo], columns: int = 6) -> np.ndarray:
    """The tracks' thumbnails in a grid, each tagged 'track ID' and the --faces N that picks it."""
    import cv2

    cols = max(1, min(columns, len(tracks)))
    rows = -(-len(tracks) // cols)
    pad, caption = 6, 34
    sheet = np.full((rows * (THUMB + caption + pad) + pad, cols * (THUMB + pad) + pad, 3), 32, np.uint8)
    for k, t in enumerate(tracks):
        y, x = pad + (k // cols) * (THUMB + caption + pad), pad + (k % cols) * (THUMB + pad)
        sheet[y:y + THUMB, x:x + THUMB] = t.thumbnail
        n = f"N={t.indices[0]}" if t.indices else "N=-"
        for line, text in enumerate((f"track {t.id}  {n}", f"f{t.first_frame}-{t.last_frame}")):
            cv2.putText(sheet, text, (x + 2, y + THUMB + 14 + 15 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (235, 235, 235), 1, cv2.LINE_AA)
    return sheet


def encode(image: np.ndarray, path: Path) -> bytes:
    """The picture in the format of `path`'s extension (.jpg, .png, .webp)."""
    import cv2

    from swapcli.write.image import format_for

    format_for(path)
    ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else path.suffix.lower()
    ok, data = cv2.imencode(ext, image, [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else [])
    if not ok:
        raise ValueError(f"could not encode the preview as {ext}")
    return data.tobytes()
