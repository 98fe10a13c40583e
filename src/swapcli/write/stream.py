"""Live outputs: an OpenCV window, a virtual camera, a v4l2 device, a network stream or a file.

Frames are written by the caller's thread as soon as they are ready, never queued:
a slow output slows the loop (and the reader then drops input frames) instead of
building up latency. ffmpeg outputs time-stamp each frame when it arrives
(``-use_wallclock_as_timestamps``), then write a constant ``fps`` stream, so an
output that got 8 frames a second still plays at real speed, and dropped
frames show as held frames, not as a fast-forward.

Files are written like `swapcli video` writes them: to a hidden temp file beside
the output, finalised (ffmpeg's stdin closed and waited for, so an MP4 gets its
index) and moved into place on exit, with the AI-generated container tags unless
--no-mark. Streams get the same tags where the container carries them (FLV).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from swapcli.core import ffmpeg as ff
from swapcli.core.errors import OutputError, SwapcliError, UsageError

log = logging.getLogger("swapcli")

STREAM_FORMATS = {"udp": "mpegts", "srt": "mpegts", "rtp": "rtp_mpegts", "tcp": "mpegts",
                  "rtmp": "flv", "rtmps": "flv"}
FILE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts", ".flv": "flv"}
VIRTUALCAM_HELP = ("--output virtualcam needs pyvirtualcam: pip install 'swapcli[live]' "
                   "(on Linux also the v4l2loopback module: sudo modprobe v4l2loopback exclusive_caps=1)")


@dataclass(frozen=True)
class OutputSpec:
    """What --output names."""

    text: str
    kind: str  # window | virtualcam | v4l2 | stream | file
    target: str = ""  # device, URL or path
    format: str = ""  # ffmpeg muxer


def parse_output(text: str) -> OutputSpec:
    text = text.strip()
    low = text.lower()
    if low == "window":
        return OutputSpec(text, "window")
    if low in ("virtualcam", "virtual", "vcam"):
        return OutputSpec(text, "virtualcam")
    if low.startswith("v4l2:"):
        device = text[5:] or "/dev/video0"
        return OutputSpec(text, "v4l2", device, "v4l2")
    if "://" in text:
        scheme = low.split("://", 1)[0]
        if scheme not in STREAM_FORMATS:
            raise UsageError(f"--output {text}: unsupported URL scheme '{scheme}' "
                             f"(use {', '.join(sorted(STREAM_FORMATS))})")
        target = text
        if scheme == "udp" and "pkt_size" not in low:  # one mpegts packet group per datagram
            target += ("&" if "?" in text else "?") + "pkt_size=1316"
        return OutputSpec(text, "stream", target, STREAM_FORMATS[scheme])
    path = Path(text)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {text}: use window, virtualcam, v4l2:/dev/videoN, a stream URL "
                         f"or a file ({', '.join(FILE_FORMATS)})")
    return OutputSpec(text, "file", text, fmt)


def check_output_available(spec: OutputSpec) -> None:
    """Fail before any model loads when the output cannot work here (one line, exit 2)."""
    if spec.kind == "virtualcam":
        try:
            import pyvirtualcam  # noqa: F401
        except ImportError:
            raise UsageError(VIRTUALCAM_HELP) from None
    elif spec.kind == "window":
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UsageError("--output window needs a display (DISPLAY is not set); use --output FILE.mp4, "
                             "a stream URL or virtualcam")
    elif spec.kind == "v4l2" and not os.path.exists(spec.target):
        raise UsageError(f"{spec.target}: no such device (create one with v4l2loopback: "
                         "sudo modprobe v4l2loopback exclusive_caps=1)")


class Sink:
    """An output opened once the frame size is known; ``write`` per frame, ``close`` finalises."""

    kind = ""
    user_closed = False  # the window was closed

    def write(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def poll_key(self) -> int:
        """The key pressed since the last call (-1: none); only windows have keys."""
        return -1

    def close(self) -> None:
        """Finish normally (finalise a file)."""

    def abort(self) -> None:
        """Stop now, leave no partial file; idempotent."""
        self.close()


class FfmpegSink(Sink):
    """A file, a network stream or a v4l2 device, encoded by one ffmpeg child."""

    def __init__(self, spec: OutputSpec, width: int, height: int, fps: Fraction, *, mark: bool = True,
                 overwrite: bool = False) -> None:
        self.spec, self.kind = spec, spec.kind
        self.width, self.height, self.fps = width, height, fps
        self.mark, self.overwrite = mark, overwrite
        self.frames = 0
        self.tmp: Path | None = None
        if spec.kind == "file":
            from swapcli.write.atomic import reserve_temp

            self.tmp = reserve_temp(Path(spec.target))
        self.command = self._command()
        self._proc: ff.Process | None = ff.Process(self.command, stdin=subprocess.PIPE)

    def _command(self) -> list[str]:
        spec = self.spec
        cmd = [*ff.base_cmd("error"), "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{self.width}x{self.height}",
               "-use_wallclock_as_timestamps", "1", "-i", "pipe:0"]
        if spec.kind == "v4l2":
            return [*cmd, "-vf", "format=yuv420p", "-f", "v4l2", spec.target]
        from swapcli.write.video import STREAM_TAGS, yuv_filter_chain

        cmd += ["-vf", yuv_filter_chain(),  # as write/video.py: exact BT.709 limited range, tagged
                "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-crf", "20",
                "-g", str(max(1, round(self.fps))), "-bf", "0",
                *(x for k, v in STREAM_TAGS.items() for x in (f"-{k}", v)),
                f"-{ff.fps_mode_option()}", "cfr", "-r", str(self.fps)]
        if spec.format in ("mp4", "mov"):
            cmd += ["-movflags", "+faststart+use_metadata_tags" if self.mark else "+faststart"]
        if self.mark:
            from swapcli.mark.metadata import video_tags

            for key, value in video_tags().items():
                cmd += ["-metadata", f"{key}={value}"]
        target = ff.media_path(self.tmp) if self.tmp is not None else spec.target
        return [*cmd, "-f", spec.format, *(["-y"] if self.tmp is not None else []), target]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def write(self, frame: np.ndarray) -> None:
        assert self._proc is not None and self._proc.popen.stdin is not None
        try:
            self._proc.popen.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (OSError, ValueError):
            raise self._failed() from None
        self.frames += 1

    def _failed(self) -> SwapcliError:
        assert self._proc is not None
        try:
            rc = self._proc.wait(10)
        except subprocess.TimeoutExpired:
            rc = -9
        line = self._proc.error_line()
        self.abort()
        error = OutputError if self.kind == "file" else SwapcliError  # a stream's end is not bad usage
        return error(f"writing {self.spec.text} failed (ffmpeg exit {rc}): {line}")

    def close(self) -> None:
        """Close ffmpeg's stdin and wait: the file gets its index (MP4 moov) and is moved into place."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.popen.stdin is not None:
                try:
                    proc.popen.stdin.close()
                except OSError:
                    pass
            try:
                rc = proc.wait(30)
            except subprocess.TimeoutExpired:
                rc = -9
            line = proc.error_line()
        finally:
            proc.kill()
        if self.tmp is None:
            return
        if rc != 0 or self.frames == 0:
            self._remove_tmp()
            if self.frames == 0:
                log.warning("no frame was written: %s not created", self.spec.text)
                return
            raise OutputError(f"writing {self.spec.text} failed (ffmpeg exit {rc}): {line}")
        from swapcli.write.atomic import publish
        from swapcli.write.video import check_complete

        try:  # frames are resampled to a constant rate from arrival times: a count cannot be asked for
            check_complete(self.tmp, 1, Path(self.spec.target))
        except OutputError:
            self._remove_tmp()
            raise
        publish(self.tmp, Path(self.spec.target), self.overwrite)
        self.tmp = None

    def abort(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


class WindowSink(Sink):
    """An OpenCV window; its keys drive the live session (see pipeline/live.py)."""

    kind = "window"
    NAME = "swapcli live (q quits)"

    def __init__(self, width: int, height: int) -> None:
        import cv2

        self._cv2 = cv2
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            cv2.resizeWindow(self.NAME, width, height)
        except cv2.error as exc:
            raise UsageError(f"--output window: cannot open a window here ({str(exc).strip().splitlines()[-1]})") from None
        self._open = True
        self._keys: list[int] = []  # pressed, not yet handled (two can come within one frame)

    def write(self, frame: np.ndarray) -> None:
        self._cv2.imshow(self.NAME, frame)
        self._events()

    def poll_key(self) -> int:
        self._events()
        return self._keys.pop(0) if self._keys else -1

    def _events(self) -> None:
        """Let the window draw and take input (waitKey), remember a key, notice a closed window."""
        if not self._open:
            return
        key = self._cv2.waitKey(1)
        if key >= 0:
            self._keys.append(key & 0xFF)
        try:
            if self._cv2.getWindowProperty(self.NAME, self._cv2.WND_PROP_VISIBLE) < 1:
                self.user_closed = True
        except self._cv2.error:
            self.user_closed = True

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._cv2.destroyWindow(self.NAME)
                self._cv2.waitKey(1)
            except self._cv2.error:
                pass


class VirtualCamSink(Sink):
    """A virtual camera (pyvirtualcam: v4l2loopback, OBS Virtual Camera, Unity Capture)."""

    kind = "virtualcam"

    def __init__(self, width: int, height: int, fps: Fraction) -> None:
        try:
            import pyvirtualcam
        except ImportError:
            raise UsageError(VIRTUALCAM_HELP) from None
        try:
            self._cam = pyvirtualcam.Camera(width, height, float(fps), fmt=pyvirtualcam.PixelFormat.BGR)
        except Exception as exc:  # noqa: BLE001 - no backend: no loopback device, no OBS
            raise UsageError(f"--output virtualcam: {exc} ({VIRTUALCAM_HELP})") from None
        log.info("virtual camera: %s", self._cam.device)

    def write(self, frame: np.ndarray) -> None:
        self._cam.send(frame)

    def close(self) -> None:
        cam, self._cam = getattr(self, "_cam", None), None
        if cam is not None:
            cam.close()


def open_sink(spec: OutputSpec, width: int, height: int, fps: Fraction, *, mark: bool = True,
              overwrite: bool = False) -> Sink:
    if spec.kind == "window":
        return WindowSink(width, height)
    if spec.kind == "virtualcam":
        return VirtualCamSink(width, height, fps)
    return FfmpegSink(spec, width, height, fps, mark=mark, overwrite=overwrite)
