"""The optional visible label (--visible-label TEXT): small white text on a
translucent dark box in the bottom-left corner, sized to the picture.

Rendered once with Pillow (any Unicode its default font covers) into a small
patch plus alpha; each frame then only blends that patch, so video pays
well under a millisecond per frame.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from swapcli.core.errors import UsageError

MAX_CHARS = 200
BOX_OPACITY = 0.55


def clean_text(text: str) -> str:
    """One line of printable text, or UsageError."""
    text = " ".join("".join(" " if unicodedata.category(c).startswith(("C", "Z")) else c for c in text).split())
    if not text:
        raise UsageError("--visible-label needs some text")
    if len(text) > MAX_CHARS:
        raise UsageError(f"--visible-label is too long ({len(text)} characters, at most {MAX_CHARS})")
    return text


@dataclass
class Label:
    x: int
    y: int
    colour: np.ndarray  # (h, w, 3) float32 BGR
    alpha: np.ndarray  # (h, w, 1) float32 0..1

    @property
    def box(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 in the picture."""
        h, w = self.alpha.shape[:2]
        return self.x, self.y, self.x + w, self.y + h

    def apply(self, bgr: np.ndarray) -> np.ndarray:
        """A copy of ``bgr`` with the label drawn on it."""
        out = bgr.copy()
        x0, y0, x1, y1 = self.box
        region = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(region * (1 - self.alpha) + self.colour * self.alpha + 0.5, 0, 255).astype(np.uint8)
        return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, AttributeError, OSError):  # pragma: no cover - bitmap fallback
        return ImageFont.load_default()


def make_label(text: str, width: int, height: int) -> Label:
    """Render ``text`` for a picture of ``width`` x ``height``; shrinks to fit narrow pictures."""
    from PIL import Image, ImageDraw

    text = clean_text(text)
    short = min(width, height)
    size = int(min(48, max(10, round(short * 0.035))))
    while True:
        font = _font(size)
        left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
        pad = max(2, size // 3)
        box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
        margin = max(2, size // 2)
        if box_w + 2 * margin <= width or size <= 6:
            break
        size = max(6, int(size * (width - 2 * margin) / box_w) - 1)
    box_w, box_h = min(box_w, width), min(box_h, height)
    ink = Image.new("L", (box_w, box_h), 0)
    ImageDraw.Draw(ink).text((pad - left, pad - top), text, fill=255, font=font)
    ink_a = np.asarray(ink, dtype=np.float32)[..., None] / 255.0
    alpha = BOX_OPACITY + (1 - BOX_OPACITY) * ink_a  # dark box, opaque white text
    colour = np.repeat(255.0 * ink_a / np.maximum(alpha, 1e-6), 3, axis=2).astype(np.float32)  # white over black
    x = min(margin, width - box_w)
    y = max(0, height - box_h - margin)
    return Label(x, y, colour, alpha.astype(np.float32))
