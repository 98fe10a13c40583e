"""Probe and stream-decode videos through ffmpeg (no ffprobe needed, no shell ever).

``probe`` parses ``ffmpeg -i`` stderr for the stream header and runs one
stream-copy pass into the ``framecrc`` muxer for exact packet timestamps: that
gives the exact frame count, the exact video duration and whether the timing
is variable (VFR), without decoding a single frame.

``FrameReader`` decodes with ``-fps_mode passthrough`` so every input frame
comes out exactly once, also for VFR input (ffmpeg's default for rawvideo
output would duplicate/drop frames to a constant rate). Frames are BGR uint8
in display orientation (ffmpeg's autorotate applies the rotation metadata).
A background thread fills a small bounded queue so decoding overlaps the
caller's processing without buffering a whole video in memory.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import subprocess
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO

import ffmpeg
import numpy as np

from swapcli.core import ffmpeg as ff
from swapcli.core.errors import InputError, SwapcliError, UsageError
from swapcli.core.prefetch import EMPTY, get_until, put_until

log = logging.getLogger(__name__)

HDR_TRANSFERS = ("smpte2084", "arib-std-b67")  # PQ (HDR10, Dolby Vision 8.1) and HLG

# swscale flags for YUV -> bgr24. Without accurate_rnd+full_chroma_int swscale takes its fast
# 8-bit path, which truncates: a flat grey comes out 0.45 levels dark on average (and a
# writer without them was 1.7-2.7 darker, differing by ffmpeg version). With them every grey
# level comes back within 1 (mean 0.12) with ffmpeg 4.2, 5.1 and 9.0 alike. bilinear only
# upsamples the chroma (the size is unchanged); it costs about 8 ms more CPU per 1080p frame
# in the decoding ffmpeg than the fast path (bicubic: 16 ms), beside the caller, not in it.
SWS_FLAGS = "bilinear+accurate_rnd+full_chroma_int"


@dataclass
class VideoInfo:
    """What the pipeline needs to know about an input video."""

    path: Path
    width: int  # display size, after rotation
    height: int
    coded_width: int  # size of the pixels as stored
    coded_height: int
    fps: Fraction  # average frame rate = frame_count / duration: the rate to write at
    r_fps: Fraction  # nominal ("tbr") rate; differs from fps for VFR
    frame_count: int | None
    duration: float  # seconds of video
    rotation: int = 0  # clockwise degrees a player turns the picture: 0/90/180/270
    audio_streams: list[str] = field(default_factory=list)  # codec names, in stream order
    subtitle_streams: int = 0
    subtitle_codecs: list[str] = field(default_factory=list)
    pix_fmt: str | None = None
    is_vfr: bool | None = None  # None: could not tell
    format_name: str = ""  # demuxer, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    hdr: bool = False
    codec: str = ""
    sar: Fraction = Fraction(1)
    color_matrix: str | None = None  # as tagged, e.g. "bt709"; None when untagged
    color_range: str | None = None  # as tagged: "tv" (limited) or "pc" (full); None when untagged
    stream_index: int = 0  # which video stream (0:v:N) is the video, skipping cover art

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_streams)

    @property
    def avg_fps(self) -> Fraction:
        return self.fps


def probe(path: str | os.PathLike[str], *, count_frames: bool = True) -> VideoInfo:
    """Describe a video file; raise InputError for anything that is not a readable video."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a video")
    if not p.is_file():  # a named pipe would block (or read as empty)
        raise InputError(f"{p}: not a regular file (a pipe, socket or device?)")
    try:
        if p.stat().st_size == 0:
            raise InputError(f"{p}: file is empty (0 bytes)")
        with open(p, "rb"):
            pass
    except PermissionError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror})") from exc
    proc = ff.run([*ff.base_cmd("info"), "-i", ff.media_path(p)], check=False, timeout=120,
                  error=InputError, what=f"reading {p.name}")
    header = ff.parse_header(proc.stderr)
    if header is None:
        raise InputError(f"{p}: not a readable video ({ff.last_error_line(proc.stderr)})")
    videos = [s for s in header.streams if s.kind == "video"]
    main = next((s for s in videos if not s.attached_pic), None)
    if main is None or not main.width or not main.height:
        raise InputError(f"{p}: has no video stream")
    index = videos.index(main)
    rotation = main.rotation
    swap = rotation in (90, 270)
    info = VideoInfo(
        path=p, width=main.height if swap else main.width, height=main.width if swap else main.height,
        coded_width=main.width, coded_height=main.height,
        fps=main.fps or main.tbr or Fraction(0), r_fps=main.tbr or main.fps or Fraction(0),
        frame_count=None, duration=header.duration or 0.0, rotation=rotation,
        audio_streams=[s.codec for s in header.streams if s.kind == "audio"],
        subtitle_codecs=[s.codec for s in header.streams if s.kind == "subtitle"],
        pix_fmt=main.pix_fmt, format_name=header.format_name, codec=main.codec,
        hdr=main.color_transfer in HDR_TRANSFERS or any("dovi" in s.lower() for s in main.side_data),
        sar=main.sar or Fraction(1), color_matrix=main.color_space, color_range=main.color_range,
        stream_index=index,
    )
    info.subtitle_streams = len(info.subtitle_codecs)
    if main.fps and main.tbr:  # header-only guess; the packet pass below is authoritative
        info.is_vfr = abs(main.fps - main.tbr) > main.tbr / 100
    if count_frames:
        _apply_packet_timing(info)
    if not info.fps:
        raise InputError(f"{p}: cannot tell the frame rate of the video stream")
    return info


def _apply_packet_timing(info: VideoInfo) -> None:
    """Exact frame count, duration and VFR flag from packet timestamps (stream copy, no decode)."""
    try:
        timing = ff.packet_timing(info.path, f"v:{info.stream_index}")
    except SwapcliError as exc:
        raise InputError(f"{info.path}: the video stream has no readable frames ({exc})") from exc
    if timing.count == 0:
        why = f" ({timing.error})" if timing.error else ""
        raise InputError(f"{info.path}: the video stream has no readable frames{why}")
    info.frame_count = timing.count
    vfr = timing.is_vfr
    if vfr is not None:
        info.is_vfr = vfr
    span = timing.span
    if span and span > 0:
        info.duration = float(span)
        exact = Fraction(timing.count) / span
        # keep the header's clean rational (30000/1001) when the timestamps only
        # differ from it by rounding to the time base (mkv: 1 ms); else trust them
        slack = 2 * timing.time_base / span
        if info.is_vfr or not info.fps or abs(exact / info.fps - 1) > slack:
            info.fps = exact.limit_denominator(1_000_000)
    elif info.fps:
        info.duration = float(timing.count / info.fps)


def check_supported(info: VideoInfo) -> None:
    """Refuse inputs we would decode wrongly: HDR (PQ/HLG) would come out washed out as 8-bit SDR."""
    if info.hdr:
        raise InputError(
            f"{info.path.name}: HDR video (PQ/HLG transfer) is not supported; convert it to SDR "
            "first, e.g. ffmpeg -i IN -vf zscale=t=linear,tonemap=hable,zscale=t=bt709:m=bt709:p=bt709,"
            "format=yuv420p OUT.mp4")


_END = object()


class FrameReader:
    """Iterate over a video's frames as BGR uint8 arrays of shape (height, width, 3).

    Use as a context manager: ``close()`` kills and reaps ffmpeg whatever happens
    (exceptions, KeyboardInterrupt, breaking out of the loop early).
    ``start``/``end`` are seconds (accurate: decoded from the keyframe before,
    frames before ``start`` dropped). ``fps`` resamples to a constant rate on
    purpose (frames duplicated/dropped); without it every frame comes out once.
    """

    def __init__(self, source: str | os.PathLike[str] | VideoInfo, *, start: float | None = None,
                 end: float | None = None, fps: Fraction | float | int | None = None,
                 queue_size: int = 8) -> None:
        self.info = source if isinstance(source, VideoInfo) else probe(source)
        check_supported(self.info)
        if start is not None and start < 0:
            raise UsageError(f"start must be >= 0 seconds, got {start}")
        if end is not None and end <= (start or 0):
            raise UsageError(f"end ({end} s) must be after start ({start or 0} s)")
        if start and self.info.duration and start >= self.info.duration:
            raise UsageError(f"start ({start} s) is past the end of the video ({self.info.duration:.2f} s)")
        if fps is not None and fps <= 0:
            raise UsageError(f"fps must be > 0, got {fps}")
        self.start, self.end = start, end
        self.fps = Fraction(fps).limit_denominator(1_000_000) if fps is not None else None
        self.width, self.height = self.info.width, self.info.height
        self._frame_bytes = self.width * self.height * 3
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._proc: ff.Process | None = None
        self._thread: threading.Thread | None = None
        self._done = False
        self.frames_read = 0

    # -- command

    def command(self) -> list[str]:
        """The ffmpeg argument list this reader runs (for logs and tests)."""
        in_opts: dict[str, str] = {}
        if self.start:
            in_opts["ss"] = f"{self.start:.6f}"
        if self.end is not None:
            in_opts["t"] = f"{self.end - (self.start or 0):.6f}"
        video = ffmpeg.input(ff.media_path(self.info.path), **in_opts)[f"v:{self.info.stream_index}"]
        if self.fps is not None:
            video = video.filter("fps", fps=str(self.fps))
        # untagged video: assume what players assume (BT.709 for HD, BT.601 for SD)
        matrix = "auto" if self.info.color_matrix else ("bt709" if self.info.coded_height >= 720 else "bt601")
        scale: dict[str, str] = {"in_color_matrix": matrix, "out_range": "pc", "flags": SWS_FLAGS}
        pix_fmt = self.info.pix_fmt or ""
        if pix_fmt.startswith("yuv"):  # the range as tagged; untagged YUV is limited ("tv") except yuvj*
            scale["in_range"] = self.info.color_range or ("pc" if pix_fmt.startswith("yuvj") else "tv")
        video = video.filter("scale", **scale).filter("format", "bgr24")
        out = ffmpeg.output(video, "pipe:1", format="rawvideo", pix_fmt="bgr24",
                            **{ff.fps_mode_option(): "passthrough"})
        return out.compile(cmd=ff.base_cmd("error"))

    @property
    def expected_frames(self) -> int | None:
        """Frames this reader should yield (for progress bars), or None if unknown."""
        total = self.info.frame_count
        if total is None:
            return None
        start = self.start or 0.0
        end = min(self.end, self.info.duration) if self.end is not None else self.info.duration
        if self.fps is not None:
            return max(0, math.ceil((end - start) * self.fps - 1e-6))
        if self.start or self.end is not None:
            return max(0, min(total, round((end - start) * self.info.fps)))
        return total

    # -- lifecycle

    def open(self) -> FrameReader:
        if self._proc is None:
            self._proc = ff.Process(self.command(), stdout=subprocess.PIPE)
            self._thread = threading.Thread(target=self._pump, name="swapcli-decode", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> FrameReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> FrameReader:
        return self.open()

    def __next__(self) -> np.ndarray:
        frame = self.read()
        if frame is None:
            raise StopIteration
        return frame

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end; raises InputError if decoding failed."""
        if self._done:
            return None
        self.open()
        item = get_until(self._queue, self._stop.is_set)  # never hangs on a reader closed elsewhere
        if item is EMPTY or item is _END:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            self.close()
            raise item
        self.frames_read += 1
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop decoding: kill and reap ffmpeg, stop the thread. Safe to call twice."""
        self._stop.set()
        self._done = True
        if self._proc is not None:
            self._proc.kill()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    # -- decoding thread

    def _put(self, item: object) -> bool:
        return put_until(self._queue, item, self._stop)

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.popen.stdout is not None
        stdout = self._proc.popen.stdout
        count = 0
        try:
            while not self._stop.is_set():
                buf = _read_exact(stdout, self._frame_bytes)
                if buf is None:
                    break
                frame = np.frombuffer(buf, dtype=np.uint8).reshape(self.height, self.width, 3)
                if not self._put(frame):
                    return
                count += 1
        except _PartialFrame as exc:
            if self._stop.is_set():
                return
            log.warning("%s: decoding ended inside a frame (%s of %d bytes)",
                        self.info.path.name, exc, self._frame_bytes)
        except (OSError, ValueError):
            if self._stop.is_set():
                return  # closed under us: expected
            raise
        if self._stop.is_set():
            return
        rc = self._proc.wait()
        name = self.info.path.name
        if rc != 0:
            self._put(InputError(f"decoding {name} failed: {self._proc.error_line()}"))
        elif count == 0:
            where = f" between {self.start or 0:g} s and {self.end:g} s" if self.end is not None else (
                f" after {self.start:g} s" if self.start else "")
            self._put(InputError(f"{name}: no frames could be decoded{where}"))
        else:
            self._put(_END)


def _read_exact(stream: IO[bytes], size: int) -> bytearray | None:
    """Exactly ``size`` bytes (a writable buffer), or None at the end of the stream."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            if got:
                raise _PartialFrame(got)
            return None
        got += n
    return buf


class _PartialFrame(EOFError):
    """ffmpeg's output ended inside a frame (it died, or was killed by close())."""
