"""Marking outputs as AI-generated, and checking for the marks.

* ``metadata``: IPTC DigitalSourceType in XMP (images) / container tags (videos).
* ``watermark``: an invisible 48-bit code in the pixels that survives
  re-encoding, resizing and moderate crops.
* ``label``: the optional visible label (--visible-label).
* ``verify``: what ``swapcli verify`` reports per file.

The writers (write/image.py, write/video.py) apply them; ``FrameMarker`` is
the pixel part they share.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class FrameMarker:
    """The pixel marks for pictures of one size: the visible label (if any), then the watermark."""

    def __init__(self, height: int, width: int, *, watermark: bool = True,
                 visible_label: str | None = None, video: bool = False) -> None:
        self.label = None
        self.embedder = None
        if visible_label is not None:
            from swapcli.mark.label import make_label

            self.label = make_label(visible_label, width, height)
        if watermark:
            from swapcli.mark.watermark import Embedder

            self.embedder = Embedder(height, width, follow_motion=video)

    @property
    def active(self) -> bool:
        return self.label is not None or self.embedder is not None

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """A marked copy (``bgr`` itself when there is nothing to do)."""
        return self.prepare(bgr)()

    def prepare(self, bgr: np.ndarray) -> Callable[[], np.ndarray]:
        """The order-dependent part now (label, the watermark's motion tracking); the rest returned.

        Call in frame order on one thread; the returned functions (-> the
        marked copy) may then run concurrently on other threads, in any order.
        ``bgr`` must not change until its function has run.
        """
        out = bgr
        if self.label is not None:
            out = self.label.apply(out)
        if self.embedder is not None:
            return self.embedder.prepare(out)
        return lambda: out
