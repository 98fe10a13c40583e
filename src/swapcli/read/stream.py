"""Live input: a camera, a network stream or a file, decoded by ffmpeg to raw bgr24 on a
pipe, of which only the newest frame is kept.

Real time first. A reader thread pulls every frame off the pipe as soon as ffmpeg
has it (so ffmpeg never stalls and the camera never buffers) and puts it in a
one-frame slot; a frame nobody took before the next one came is dropped and
counted. The consumer always gets the newest frame, so when processing is slower
than the input, latency stays at about one processing time instead of growing.

The frame size and rate come from ffmpeg's own "Output #0" header (logged once,
when the first frame has been decoded), so URLs need no separate probing pass.
A FILE is read at its native rate (``-re``), as a camera would deliver it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from swapcli.core import ffmpeg as ff
from swapcli.core.errors import InputError, UsageError

log = logging.getLogger("swapcli")

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp", "http", "https", "hls", "rist")
SWS_FLAGS = "bilinear+accurate_rnd+full_chroma_int"  # as read/video.py: exact greys


@dataclass(frozen=True)
class InputSpec:
    """What --input names, as ffmpeg input arguments."""

    text: str
    kind: str  # camera | url | file
    args: list[str] = field(default_factory=list)  # ffmpeg arguments up to and including -i X

    @property
    def label(self) -> str:
        return self.text


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'1280x720' -> (1280, 720); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d{2,5})\s*[xX*]\s*(\d{2,5})\s*", text)
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise UsageError(f"--size takes WIDTHxHEIGHT, e.g. 1280x720, not '{text}'")
    return int(m.group(1)), int(m.group(2))


def parse_input(text: str, *, size: tuple[int, int] | None = None, fps: float | None = None,
                realtime: bool = True, platform: str | None = None) -> InputSpec:
    """--input: a camera index (0) or device (/dev/video0, video=NAME), a URL, or a video file."""
    platform = platform or sys.platform
    text = text.strip()
    if not text:
        raise UsageError("--input is empty")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme not in URL_SCHEMES:
            raise UsageError(f"--input {text}: unsupported URL scheme '{scheme}' (use {', '.join(URL_SCHEMES)})")
        # no input buffering: a live stream's frames are passed on as they arrive
        return InputSpec(text, "url", ["-fflags", "nobuffer", "-flags", "low_delay", "-i", text])
    camera = _camera_args(text, size, fps or 30, platform)
    if camera is not None:
        return InputSpec(text, "camera", camera)
    path = Path(text)
    if not path.exists():
        raise InputError(f"{text}: no such file, camera or URL")
    if path.is_dir():
        raise InputError(f"{text}: is a directory, not a video")
    if not path.is_file():
        raise InputError(f"{text}: not a regular file or camera device")
    return InputSpec(text, "file", [*(["-re"] if realtime else []), "-i", ff.media_path(path)])


def _camera_args(text: str, size: tuple[int, int] | None, fps: float, platform: str) -> list[str] | None:
    """ffmpeg input arguments for a camera, per platform; None when ``text`` names no camera."""
    index = int(text) if text.isdigit() else None
    opts = ["-framerate", f"{fps:g}", *(["-video_size", f"{size[0]}x{size[1]}"] if size else [])]
    if platform.startswith("linux"):
        device = f"/dev/video{index}" if index is not None else text if text.startswith("/dev/video") else None
        if device is None:
            return None
        if not os.path.exists(device):
            raise InputError(f"{device}: no such camera (is it plugged in? `ls /dev/video*` lists them)")
        return ["-f", "v4l2", *opts, "-i", device]
    if platform == "darwin":
        if index is None:
            return None
        return ["-f", "avfoundation", *opts, "-i", f"{index}:none"]
    if platform.startswith("win"):
        if text.startswith("video="):
            return ["-f", "dshow", *opts, "-i", text]
        if index is None:
            return None
        return ["-f", "dshow", *opts, "-i", f"video={_dshow_camera(index)}"]
    return None


def _dshow_camera(index: int) -> str:
    """The name of the index-th DirectShow video device (dshow wants names, not numbers)."""
    proc = ff.run([*ff.base_cmd("info"), "-list_devices", "true", "-f", "dshow", "-i", "dummy"], check=False,
                  timeout=30)
    names = re.findall(r'"([^"]+)"\s*\(video\)', proc.stderr)
    if index >= len(names):
        raise InputError(f"camera {index}: only {len(names)} video device(s) found ({', '.join(names) or 'none'})")
    return names[index]


def reader_command(spec: InputSpec, size: tuple[int, int] | None = None) -> list[str]:
    """ffmpeg: the input's first video stream as bgr24 (scaled to ``size``, letterboxed) on stdout."""
    chain = []
    if size is not None:
        w, h = size
        chain += [f"scale={w}:{h}:force_original_aspect_ratio=decrease:flags={SWS_FLAGS}",
                  f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2"]
    else:
        chain += [f"scale=trunc(iw/2)*2:trunc(ih/2)*2:flags={SWS_FLAGS}"]
    chain += ["format=bgr24"]
    # loglevel info (no stats): the "Output #0" header gives the frame size and rate
    return [*ff.base_cmd("info"), "-nostats", *spec.args, "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", ",".join(chain), "-f", "rawvideo", "-pix_fmt", "bgr24",
            f"-{ff.fps_mode_option()}", "passthrough", "pipe:1"]


_OUT_STREAM = re.compile(r"Stream #0:0.*Video: rawvideo.*?, (\d+)x(\d+)\b")
_RATE = re.compile(r", ([\d.]+k?) (?:fps|tbr)\b")


@dataclass
class Frame:
    """One input frame and when the reader got it (time.perf_counter())."""

    image: np.ndarray
    t_got: float
    index: int  # position in the input (frames before it were either taken or dropped)


class LatestFrameReader:
    """The input's frames, newest only: ``take()`` returns the latest frame not yet taken.

    Use as a context manager; ``close()`` kills and reaps ffmpeg and stops the thread.
    ``frames_in`` counts every frame read from ffmpeg, ``dropped`` those replaced
    before being taken.
    """

    def __init__(self, spec: InputSpec, size: tuple[int, int] | None = None) -> None:
        self.spec = spec
        self.command = reader_command(spec, size)
        self.width = self.height = 0
        self.fps: Fraction | None = None
        self.frames_in = 0
        self.dropped = 0
        self.started = 0.0
        self.error: InputError | None = None
        self.ended = False
        self._header = threading.Event()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._proc: ff.Process | None = None
        self._thread: threading.Thread | None = None
        self._after_header = False

    # -- lifecycle

    def open(self) -> LatestFrameReader:
        if self._proc is None:
            self.started = time.perf_counter()
            self._proc = ff.Process(self.command, stdout=subprocess.PIPE, on_line=self._on_line)
            self._thread = threading.Thread(target=self._pump, name="swapcli-live-read", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> LatestFrameReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill and reap ffmpeg, join the thread; idempotent."""
        self._stop.set()
        if self._proc is not None:
            self._proc.kill()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- consuming

    def take(self, timeout: float) -> Frame | None:
        """The newest untaken frame, or None when none came within ``timeout`` s (see ``ended``).

        Raises InputError when the input could not be opened or decoded at all.
        """
        with self._cond:
            if self._slot is None and not self.ended:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            if frame is None and self.ended and self.error is not None:
                raise self.error
            return frame

    @property
    def input_fps(self) -> float:
        """Frames per second received so far."""
        elapsed = time.perf_counter() - self.started if self.started else 0.0
        return self.frames_in / elapsed if elapsed > 0 else 0.0

    # -- the reading thread

    def _on_line(self, line: str) -> None:
        if self._header.is_set():
            return
        if line.startswith("Output #0"):
            self._after_header = True
        elif self._after_header and (m := _OUT_STREAM.search(line)):
            self.width, self.height = int(m.group(1)), int(m.group(2))
            rate = _RATE.search(line)
            self.fps = ff.parse_rate(rate.group(1)) if rate else None
            self._header.set()

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.popen.stdout is not None
        stdout = self._proc.popen.stdout
        try:
            while not self._header.wait(0.05):  # the size first: ffmpeg logs it with the first frame
                if self._stop.is_set() or self._proc.poll() is not None:
                    break
            size = self.width * self.height * 3
            while size and not self._stop.is_set():
                buf = bytearray(size)
                view, got = memoryview(buf), 0
                while got < size:
                    n = stdout.readinto(view[got:])  # type: ignore[attr-defined]
                    if not n:
                        break
                    got += n
                if got < size:
                    break
                self._put(np.frombuffer(buf, dtype=np.uint8).reshape(self.height, self.width, 3))
        except (OSError, ValueError):
            pass  # the pipe closed under us: close(), or ffmpeg died (reported below)
        if not self._stop.is_set():
            self._finish()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def _put(self, image: np.ndarray) -> None:
        frame = Frame(image, time.perf_counter(), self.frames_in)
        with self._cond:
            if self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self.frames_in += 1
            self._cond.notify_all()

    def _finish(self) -> None:
        """The input ended by itself: an error when it never gave a frame, else a log line."""
        assert self._proc is not None
        try:
            rc = self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = -9
        if self.frames_in == 0:
            self.error = InputError(f"cannot open {self.spec.label}: {self._proc.error_line()}" if rc
                                    else f"{self.spec.label}: no video frames")
        elif rc:
            log.warning("input %s ended: %s", self.spec.label, self._proc.error_line())
