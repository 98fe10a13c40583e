"""`swapcli eval --report out.html`: one self-contained HTML file (crops embedded as base64
JPEG, no external files, no scripts) showing source | target | result with the numbers."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

CROP_PX = 200


@dataclass
class ReportRow:
    title: str
    images: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (caption, BGR crop)
    numbers: dict[str, Any] = field(default_factory=dict)


def face_crop(image: np.ndarray, bbox: Sequence[float], size: int = CROP_PX, margin: float = 0.35) -> np.ndarray:
    """A square crop around a face box (padded grey past the picture's edge), size x size."""
    x0, y0, x1, y1 = (float(v) for v in bbox[:4])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    scale = size / (2 * half)
    matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]], dtype=np.float64)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))


def placeholder(text: str, size: int = CROP_PX) -> np.ndarray:
    img = np.full((size, size, 3), 200, np.uint8)
    cv2.putText(img, text, (10, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    return img


def jpeg_data_uri(image: np.ndarray, quality: int = 88) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - a uint8 BGR array always encodes
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eee;font-weight:600}.row{background:#fff;border:1px solid #ddd;padding:12px;margin:12px 0}
figure{display:inline-block;margin:0 12px 8px 0;text-align:center}figure img{display:block;border:1px solid #bbb}
figcaption{font-size:12px;color:#555}.muted{color:#777;font-size:12px}
"""


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    return str(v)


def _table(numbers: dict[str, Any]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_value(v))}</td></tr>"
                    for k, v in numbers.items())
    return f"<table>{cells}</table>"


def render(title: str, header: dict[str, Any], summary: dict[str, Any], rows: Sequence[ReportRow],
           notes: Sequence[str] = ()) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _table(header),
        "<h2>Summary</h2>", _table(summary),
        "<p class='muted'>Identity: ArcFace cosine (higher id_source and lower id_target is better). "
        "Pose in degrees, expression and eye errors in inter-ocular distances, jitter in % of face "
        "size, flicker in 0-255 levels (lower is better). See docs/metrics.md.</p>",
    ]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for row in rows:
        figures = "".join(
            f"<figure><img src='{jpeg_data_uri(img)}' width='{img.shape[1]}' height='{img.shape[0]}' "
            f"alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}</figcaption></figure>"
            for cap, img in row.images)
        parts.append(f"<div class='row'><h2>{html.escape(row.title)}</h2>{figures}{_table(row.numbers)}</div>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path: Path, text: str) -> None:
    """Atomically (temp file + rename): a crash never leaves half a report."""
    from swapcli.write.atomic import write_bytes

    write_bytes(Path(path), text.encode("utf-8"))
