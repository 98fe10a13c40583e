"""Where the faces of a video are, without running the detector over every whole frame.

Between two frames a face moves a little, so the detector runs on a window around each face
found in the previous frame, at the scale the whole-frame pass would have seen it (same
pixels per face: the boxes, and so the landmarks, do not jump between the two kinds of pass).
The whole frame is searched again every `every` frames, on a scene cut, and whenever a window
loses its face, so a new face appears within `every` frames and a lost one is looked for at
once. Windows only pay while they are smaller than the frame: with many faces the whole
frame is searched every time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from swapcli.analyse.face import Face

WINDOW_MARGIN = 0.4  # the window: the face box grown by this share of its size on each side
MAX_WINDOW_COST = 0.5  # windows are used only while their pixels are under this share of a full pass
CUT_LEVEL = 30.0  # mean absolute difference (0..255) of 64x36 grey thumbnails that counts as a cut


@dataclass
class FinderStats:
    full: int = 0  # whole-frame passes
    windows: int = 0  # window passes (one per face)
    cuts: int = 0  # scene cuts seen
    lost: int = 0  # frames where a window lost its face (searched whole at once)

    def to_json(self) -> dict:
        return {"full": self.full, "windows": self.windows, "cuts": self.cuts, "lost": self.lost}


@dataclass
class FaceFinder:
    """Per-frame detections for a stream of frames (call `find` on every frame, in order)."""

    analyser: object
    det_size: int
    every: int = 8
    stats: FinderStats = field(default_factory=FinderStats)
    _last: list[Face] = field(default_factory=list)
    _since_full: int = 0
    _thumb: np.ndarray | None = None

    def find(self, frame: np.ndarray) -> list[Face]:
        cut = self._is_cut(frame)
        windows = None if cut or self._since_full + 1 >= self.every else self._windows(frame.shape)
        faces = None
        if windows:
            faces = self.analyser.detect_windows(frame, windows)
            self.stats.windows += len(windows)
            if len(faces) < len(self._last):  # a face left its window: look everywhere now
                self.stats.lost += 1
                faces = None
        if faces is None:
            faces = self.analyser.detect(frame)
            self.stats.full += 1
            self._since_full = 0
        else:
            self._since_full += 1
        self.stats.cuts += int(cut)
        faces.sort(key=lambda f: (f.center[0], f.center[1]))
        self._last = faces
        return faces

    def _is_cut(self, frame: np.ndarray) -> bool:
        import cv2

        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(grey, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > CUT_LEVEL
        self._thumb = thumb
        return cut

    def _windows(self, shape: tuple[int, ...]) -> list[tuple[float, float, float, float]] | None:
        """A window per face of the last frame, or None when a whole pass is cheaper."""
        if not self._last:
            return None
        h, w = shape[:2]
        scale = self.det_size / max(h, w)  # detector pixels per frame pixel in a whole-frame pass
        out, cost = [], 0.0
        for face in self._last:
            x0, y0, x1, y1 = (float(v) for v in face.bbox)
            grow = WINDOW_MARGIN * max(x1 - x0, y1 - y0)
            out.append((x0 - grow, y0 - grow, x1 + grow, y1 + grow))
            cost += (np.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * WINDOW_MARGIN) * scale / 64.0) * 64) ** 2
        return out if cost < MAX_WINDOW_COST * self.det_size ** 2 else None
