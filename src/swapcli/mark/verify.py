"""What `swapcli verify` finds in one file: the metadata mark and the watermark.

A file counts as marked when either is present: the metadata is the
declaration a platform reads, the watermark is what survives when metadata
is stripped (screenshots, re-uploads, re-encodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swapcli.core.errors import InputError, SwapcliError
from swapcli.mark.metadata import MetadataMark, read_image_mark, read_video_mark
from swapcli.mark.watermark import NBITS, Detection
from swapcli.read.video import VideoInfo

DEFAULT_SAMPLES = 6


@dataclass
class FileReport:
    path: Path
    kind: str = "unknown"  # image | video
    metadata: MetadataMark | None = None
    watermark: Detection | None = None
    frames: list[dict] = field(default_factory=list)  # video: per sampled frame
    error: str | None = None
    exit_code: int = 0  # of the error, when there is one

    @property
    def marked(self) -> bool:
        return bool((self.metadata and self.metadata.present) or (self.watermark and self.watermark.present))

    def to_json(self) -> dict:
        out: dict = {"path": str(self.path), "kind": self.kind, "marked": self.marked if not self.error else None,
                     "metadata": self.metadata.to_json() if self.metadata else None,
                     "watermark": self.watermark.to_json() if self.watermark else None}
        if self.kind == "video" and self.frames:
            out["frames"] = self.frames
        if self.error:
            out["error"] = self.error
        return out

    def summary(self) -> str:
        """One human line."""
        if self.error:
            return f"{self.path}: unreadable ({self.error})"
        md = self.metadata
        if md and md.present:
            what = md.digital_source_type.rsplit("/", 1)[-1] if md.digital_source_type else "?"
            meta = f"metadata: {what}" + (f", {md.software}" if md.software else "")
        else:
            meta = "metadata: none"
        wm = self.watermark
        if wm is None:
            mark = "watermark: not checked"
        else:
            mark = f"watermark: {'yes' if wm.present else 'none'} ({wm.bits}/{NBITS} bits, score {wm.score:.1f}"
            if self.kind == "video":
                seen = sum(1 for f in self.frames if f["present"])
                mark += f", {seen}/{len(self.frames)} frames alone"
            mark += ")"
        return f"{self.path}: {'marked' if self.marked else 'NOT marked'} ({meta}; {mark})"


def _kind(path: Path) -> str:
    from swapcli.read.kinds import media_kind

    return media_kind(path) or "unknown"


def verify_image(path: Path) -> FileReport:
    from PIL import Image

    from swapcli.mark.watermark import detect
    from swapcli.read.image import read_image

    loaded = read_image(path)  # InputError for anything unreadable
    with Image.open(path) as im:
        metadata = read_image_mark(im)
    return FileReport(path, "image", metadata, detect(loaded.bgr))


def _sample_frames(info: VideoInfo, samples: int) -> list[np.ndarray]:
    """``samples`` frames spread over the video (accurate seeks; one short ffmpeg run each)."""
    from swapcli.read.video import FrameReader

    duration = info.duration or 0.0
    step = 1.0 / float(info.fps) if info.fps else 0.04
    frames: list[np.ndarray] = []
    times = [duration * (i + 0.5) / samples for i in range(samples)] if duration > step * samples else [None]
    for t in times:
        start = None if not t else min(t, max(0.0, duration - step))
        with FrameReader(info, start=start or None) as reader:
            frame = reader.read()
        if frame is not None:
            frames.append(frame)
    if len(frames) < min(samples, 2) and times != [None]:  # a short or odd file: take the first frames
        with FrameReader(info) as reader:
            for i, frame in enumerate(reader):
                frames.append(frame)
                if i + 1 >= samples:
                    break
    if not frames:
        raise InputError(f"{info.path}: no frames could be decoded")
    return frames


def verify_video(path: Path, samples: int = DEFAULT_SAMPLES) -> FileReport:
    from swapcli.core import ffmpeg as ff
    from swapcli.mark.watermark import detect_frames
    from swapcli.read.video import probe

    info = probe(path, count_frames=False)  # InputError for anything unreadable
    header = ff.parse_header(ff.run([*ff.base_cmd("info"), "-i", ff.media_path(path)], check=False,
                                    timeout=120).stderr)
    metadata = read_video_mark(header.metadata if header else {})
    frames = _sample_frames(info, samples)
    combined, singles = detect_frames(frames)
    report = FileReport(path, "video", metadata, combined)
    report.frames = [{"present": d.present, "bits": d.bits, "score": round(d.score, 2)} for d in singles]
    return report


def verify_file(path: str | Path, samples: int = DEFAULT_SAMPLES) -> FileReport:
    """Check one file; unreadable input comes back as a report with ``error`` set."""
    path = Path(path)
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory")
        kind = _kind(path)
        if kind == "image":
            return verify_image(path)
        if kind == "video":
            return verify_video(path, samples)
        try:  # unknown extension: whatever it turns out to be
            return verify_image(path)
        except InputError:
            return verify_video(path, samples)
    except SwapcliError as exc:
        return FileReport(path, _kind(path), error=str(exc), exit_code=exc.exit_code)
