"""Stream-encode BGR frames to a video file through ffmpeg, atomically, with the input's audio.

Design choices (and why):

* Atomic output. ffmpeg writes ``.NAME.swapcli-PID-XXXXXXXX.tmpEXT`` in the output's
  folder (write/atomic.py: same filesystem, so the move is atomic; same extension, so
  the right muxer is chosen). Only a clean ffmpeg exit whose file parses and holds
  every frame is moved to the output (never over a file another run made meanwhile);
  ``abort()``, an exception or KeyboardInterrupt in the ``with`` block kills and
  reaps ffmpeg and deletes the temp file, so a partial output never exists.
* One ffmpeg run. Raw bgr24 frames come in on stdin (input 0); the original
  file is input 1, cut with the same input ``-ss``/``-t`` as the reader, for
  audio, subtitles and global metadata. No second remux pass.
* Frame rate / VFR. Frames arrive without timestamps, so the video is written
  at a constant ``fps``. Pass ``VideoInfo.fps``: it is the exact *average* rate
  (frame_count / duration), so for VFR input the output keeps the frame count
  AND the duration, and audio stays in sync at both ends; only the spacing of
  individual frames is evened out (sync inside a clip can drift by at most the
  input's own timing irregularity). Carrying per-frame timestamps would need a
  container writer of our own in Python; resampling to constant rate instead
  (``FrameReader(fps=...)``) keeps exact sync but changes the frame count.
* Odd sizes. H.264/HEVC 4:2:0 needs even dimensions and a 4:4:4 file plays in
  few players, so an odd width/height is padded by one black pixel column/row
  (right/bottom); nothing is scaled or cropped away. This is logged and noted.
* Colour. bgr24 -> yuv420p is converted with the BT.709 matrix and the stream
  is tagged BT.709 (primaries, transfer, matrix, limited range), so players do
  not guess BT.601 and shift colours.
* Audio. Copied bit-exact when the container can hold the codec (mp4/m4v: aac,
  mp3, alac, ac3, eac3, opus, flac; mov also PCM; mkv: anything); otherwise
  re-encoded to AAC 192 kb/s and said so in ``notes``. Text subtitles go to
  mov_text in mp4/mov (srt in mkv); bitmap subtitles cannot, and are dropped
  with a note. No audio in the input, no audio in the output.
* Marking. Unless ``mark=False`` (--no-mark), every frame gets the invisible
  watermark (swapcli.mark.watermark) and the container gets AI-generated tags
  (comment, DigitalSourceType = IPTC compositeWithTrainedAlgorithmicMedia,
  synthetic_generator = "swapcli VERSION"; MP4/MOV need ``use_metadata_tags``
  for custom keys, which stores all tags as QuickTime mdta keys).
  ``visible_label`` draws a small label on every frame. Marking costs ~12 ms of
  CPU per 1080p frame, more than a whole frame's budget at 100 fps, so it runs
  off the caller's thread and in parallel: the encoder thread does the
  order-dependent part (label, the watermark's motion tracking, ~2 ms) in frame
  order and hands the rest to a small thread pool (``mark_workers()``; OpenCV
  releases the GIL), then writes the results to ffmpeg in frame order. At most
  ``queue_size`` frames wait and ``workers + 1`` are being marked, so memory
  stays bounded. A failure there aborts like any encoder failure (nothing left
  behind).
* Speed. Default preset is ``veryfast`` (not x264's ``medium``): roughly 2-3x
  faster at CRF 18 for a somewhat larger file, the right trade for a tool whose
  output is usually reviewed and re-shared. A background thread feeds ffmpeg
  from a small bounded queue so encoding overlaps the caller's processing.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import subprocess
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from swapcli.core import ffmpeg as ff
from swapcli.core.errors import OutputError, SwapcliError, UsageError
from swapcli.read.video import VideoInfo, probe
from swapcli.write.atomic import publish, reserve_temp

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
CODECS = ("libx264", "libx265", "h264_nvenc", "hevc_nvenc")
CODEC_CHOICES = ("auto", *CODECS)  # what VideoWriter(codec=...) accepts; "auto": see resolve_codec()
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_NVENC_PRESETS = dict(zip(X264_PRESETS, ("p1", "p2", "p3", "p3", "p4", "p5", "p6", "p7", "p7")))
MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})
TEXT_SUBTITLES = frozenset({"mov_text", "subrip", "srt", "ass", "ssa", "webvtt", "text"})
AAC_BITRATE = "192k"


def audio_copyable(container: str, codec: str) -> bool:
    """Whether an audio stream of ``codec`` can be stream-copied into ``container`` (a CONTAINERS value)."""
    if container == "matroska":
        return True
    if container == "mov" and codec.startswith("pcm_"):
        return True
    return codec in MP4_AUDIO


def subtitle_codec(container: str, codec: str) -> str | None:
    """Output subtitle codec for an input subtitle stream, or None when it cannot be carried."""
    if container == "matroska":
        return "srt" if codec == "mov_text" else "copy"
    return "mov_text" if codec in TEXT_SUBTITLES else None


def mark_workers(cores: int | None = None) -> int:
    """Threads that mark frames in parallel: one core is left for the caller, ffmpeg has its own.

    At most 4: 4 x ~80 fps of 1080p marking (one core each) is far above what
    a swap pipeline feeds; more would only compete with the caller and ffmpeg.
    """
    cores = cores or os.cpu_count() or 1
    return max(1, min(4, cores - 1))


def encoder_options(codec: str, crf: int, preset: str) -> dict[str, object]:
    """Rate control and speed for one encoder (shared with `swapcli bench`'s plain transcode)."""
    if codec in ("libx264", "libx265"):
        opts: dict[str, object] = {"crf": crf, "preset": preset}
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        return opts
    # nvenc: constant-quality VBR (-rc vbr -cq N -b:v 0: no bitrate cap), the closest thing
    # to CRF; cq 0 would mean "automatic", so crf 0 asks for the best cq instead. -tune hq
    # is ffmpeg's default, spelt out so the command says what it does. B-frames are left to
    # the preset: an explicit -bf fails on GPUs without them (HEVC before Turing) and does
    # not raise throughput (NVENC runs several hundred 1080p fps at p1..p4 either way).
    return {"preset": _NVENC_PRESETS[preset], "tune": "hq", "rc": "vbr", "cq": max(1, crf), "b:v": 0}


def resolve_codec(codec: str) -> str:
    """The encoder to use for ``codec``: ``"auto"`` picks NVENC when it works here, else libx264.

    ``"auto"`` means h264_nvenc when this ffmpeg has that encoder AND a tiny test
    encode opens it (an NVIDIA GPU and driver are present), otherwise libx264.
    Both checks are cached per process (``core.ffmpeg.encoders`` /
    ``encoder_error``), so this costs at most one small ffmpeg run. Any other
    name is returned unchanged (VideoWriter validates it).
    """
    if codec != "auto":
        return codec
    try:
        if "h264_nvenc" in ff.encoders() and ff.encoder_error("h264_nvenc") is None:
            return "h264_nvenc"
    except SwapcliError as exc:  # ffmpeg missing or broken: libx264 then fails with the real reason
        log.debug("NVENC check failed: %s", exc)
    return "libx264"


# bgr24 -> BT.709 limited-range yuv420p, exact (see VideoWriter._command), and its tags; every encoder
# of frames (video, live) uses these.
TO_YUV = {"in_range": "pc", "out_range": "tv", "out_color_matrix": "bt709", "flags": "bicubic+accurate_rnd+full_chroma_int"}
FRAME_TAGS = {"range": "tv", "colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}
STREAM_TAGS = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"}


def yuv_filter_chain() -> str:
    """TO_YUV and FRAME_TAGS as one -vf chain (for commands built by hand)."""
    def args(d: dict) -> str:
        return ":".join(f"{k}={v}" for k, v in d.items())

    return f"scale={args(TO_YUV)},format=yuv420p,setparams={args(FRAME_TAGS)}"


def check_complete(path: Path, frames: int, output: Path) -> None:
    """The encoder's exit status is not proof: some ffmpeg builds exit 0 after a full disk cut
    the file (no index, "moov atom not found"). The file must parse and hold every frame."""
    try:
        timing = ff.packet_timing(path)
    except SwapcliError as exc:
        raise OutputError(f"cannot write {output}: the encoded file is unreadable ({exc}); disk full?") from None
    if timing.count < frames:
        raise OutputError(f"cannot write {output}: the encoded file holds {timing.count} of {frames} frames "
                          "(disk full?)")


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


_END = object()


class _MarkingError(SwapcliError):
    """Marking a frame failed on the encoder thread."""


class VideoWriter:
    """Write BGR uint8 frames of shape (height, width, 3) to ``path``.

    Use as a context manager: leaving the block normally finalises the file
    (``close()``), leaving it with any exception (KeyboardInterrupt included)
    aborts and leaves nothing behind (``abort()``). ``notes`` collects what the
    CLI should tell the user (audio re-encoded, padding, dropped subtitles).
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int,
                 fps: Fraction | float | int, *, codec: str = "libx264", crf: int = 18,
                 preset: str = "veryfast", audio_source: str | os.PathLike[str] | VideoInfo | None = None,
                 start: float | None = None, end: float | None = None, sar: Fraction | None = None,
                 queue_size: int = 8, mark: bool = True, visible_label: str | None = None,
                 workers: int | None = None, overwrite: bool = True) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.requested_codec = codec
        self.codec, self.crf, self.preset = codec, crf, preset
        self.start, self.end = start, end
        self.sar = sar or Fraction(1)
        self.notes: list[str] = []
        self.frames_written = 0
        self.mark = mark
        self.overwrite = overwrite
        if self.width <= 0 or self.height <= 0:
            raise UsageError(f"bad frame size {width}x{height}")
        if self.fps <= 0:
            raise UsageError(f"frame rate must be > 0, got {fps}")
        if not 0 <= crf <= 51:
            raise UsageError(f"crf must be between 0 and 51, got {crf}")
        if preset not in X264_PRESETS:
            raise UsageError(f"unknown preset {preset!r} (choose from {', '.join(X264_PRESETS)})")
        self.container = CONTAINERS.get(self.path.suffix.lower(), "")
        if not self.container:
            raise OutputError(f"{self.path.name}: unsupported output type "
                              f"'{self.path.suffix}' (use {', '.join(CONTAINERS)})")
        if self.path.is_dir():
            raise OutputError(f"{self.path}: is a directory")
        self.source: VideoInfo | None = None
        if audio_source is not None:
            source_path = audio_source.path if isinstance(audio_source, VideoInfo) else Path(audio_source)
            if _same_file(self.path, source_path):
                raise OutputError(f"{self.path}: output would overwrite the input")
            self.source = audio_source if isinstance(audio_source, VideoInfo) else probe(
                source_path, count_frames=False)
        if codec == "auto":
            self.codec = resolve_codec(codec)
            log.info("--codec auto: encoding with %s", self.codec)
            if self.codec == "h264_nvenc":
                self.notes.append("encoding with h264_nvenc (NVIDIA GPU)")
        self._check_codec()
        if not self.path.parent.is_dir():
            raise OutputError(f"{self.path}: folder {self.path.parent} does not exist")
        self._marker = None
        if mark or visible_label is not None:
            from swapcli.mark import FrameMarker

            self._marker = FrameMarker(self.height, self.width, watermark=mark, visible_label=visible_label,
                                       video=True)

        self.tmp_path = reserve_temp(self.path)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._thread_error: BaseException | None = None
        self._finished = False
        self._proc: ff.Process | None = None
        self._thread: threading.Thread | None = None
        self.workers = max(1, workers or mark_workers()) if self._marker is not None else 0
        self._pool: ThreadPoolExecutor | None = None
        self.command = self._command()
        # ffmpeg starts in __enter__ (or at the first write), not here: a Ctrl-C between the
        # constructor and the `with` would otherwise leave a running encoder and its temp file.

    def _start(self) -> None:
        if self._proc is not None:
            return
        try:
            if self._marker is not None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="swapcli-mark")
            self._proc = ff.Process(self.command, stdin=subprocess.PIPE)
            self._thread = threading.Thread(target=self._pump, name="swapcli-encode", daemon=True)
            self._thread.start()
        except BaseException:
            self.abort()
            raise

    # -- setup

    def _check_codec(self) -> None:
        if self.codec not in CODECS:
            raise UsageError(f"unknown video codec {self.codec!r} (choose from {', '.join(CODEC_CHOICES)})")
        if self.codec not in ff.encoders():
            raise UsageError(f"this ffmpeg ({ff.ffmpeg_exe()}) has no {self.codec} encoder")
        if "nvenc" in self.codec:
            why = ff.encoder_error(self.codec)
            if why:
                raise UsageError(f"{self.codec} cannot be used here (NVIDIA GPU and driver needed): {why}")

    def _command(self) -> list[str]:
        video = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="bgr24",
                             s=f"{self.width}x{self.height}", framerate=str(self.fps))["v"]
        if self.width % 2 or self.height % 2:
            even = (self.width + self.width % 2, self.height + self.height % 2)
            video = video.filter("pad", even[0], even[1], 0, 0, color="black")
            note = (f"padded {self.width}x{self.height} to {even[0]}x{even[1]} with black "
                    "(4:2:0 video needs even dimensions)")
            self.notes.append(note)
            log.info(note)
        # bgr24 is full range; yuv420p is limited ("tv") BT.709, said explicitly on both sides.
        # accurate_rnd+full_chroma_int: swscale's fast 8-bit path truncates (and its chroma
        # differs by ffmpeg version): frames came back 1.7-2.7 levels dark, with them <= 1.
        # setparams tags the frames too: ffmpeg >= 7 takes the tags from the frames, not from
        # -color_primaries/-color_trc, and left primaries and transfer "unknown".
        video = (video.filter("setsar", str(self.sar)).filter("scale", **TO_YUV).filter("format", "yuv420p")
                 .filter("setparams", **FRAME_TAGS))
        opts: dict[str, object] = {
            "c:v": self.codec, **STREAM_TAGS, ff.fps_mode_option(): "passthrough", "max_muxing_queue_size": 4096,
        }
        opts.update(encoder_options(self.codec, self.crf, self.preset))
        if self.codec in ("libx265", "hevc_nvenc") and self.container in ("mp4", "mov"):
            opts["tag:v"] = "hvc1"  # what Apple players require for HEVC
        if self.container in ("mp4", "mov"):
            opts["movflags"] = "+faststart+use_metadata_tags" if self.mark else "+faststart"
        streams = [video]
        if self.source is not None:
            streams += self._source_streams(opts)
        out = ffmpeg.output(*streams, ff.media_path(self.tmp_path), format=self.container, **opts)
        cmd = out.compile(cmd=[*ff.base_cmd("error"), "-y"])
        if self.mark:  # after -map_metadata, so these win over the input's tags of the same name
            from swapcli.mark.metadata import video_tags

            tags = dict(video_tags())
            if self.container in ("mp4", "mov"):
                # mdta keys would also store the input's ftyp fields, which then read back doubled
                tags.update(major_brand="", minor_version="", compatible_brands="")
            cmd[-1:-1] = [arg for key, value in tags.items() for arg in ("-metadata", f"{key}={value}")]
        return cmd

    def _source_streams(self, opts: dict[str, object]) -> list[object]:
        assert self.source is not None
        src_opts: dict[str, str] = {}
        if self.start:
            src_opts["ss"] = f"{self.start:.6f}"
        if self.end is not None:
            src_opts["t"] = f"{self.end - (self.start or 0):.6f}"
        src = ffmpeg.input(ff.media_path(self.source.path), **src_opts)
        streams: list[object] = []
        ext = self.path.suffix.lower()
        for i, codec in enumerate(self.source.audio_streams):
            streams.append(src[f"a:{i}"])
            if audio_copyable(self.container, codec):
                opts[f"c:a:{i}"] = "copy"
            else:
                opts[f"c:a:{i}"] = "aac"
                opts[f"b:a:{i}"] = AAC_BITRATE
                self.notes.append(f"audio stream {i} ({codec}) re-encoded to AAC {AAC_BITRATE}/s: "
                                  f"{ext} files cannot hold {codec} as-is")
        out_sub = 0
        for i, codec in enumerate(self.source.subtitle_codecs):
            target = subtitle_codec(self.container, codec)
            if target is None:
                self.notes.append(f"subtitle stream {i} ({codec}) dropped: {ext} files cannot hold "
                                  "bitmap subtitles")
                continue
            streams.append(src[f"s:{i}"])
            opts[f"c:s:{out_sub}"] = target
            out_sub += 1
        if streams:  # ffmpeg-python only adds input 1 when a stream of it is mapped
            opts["map_metadata"] = "1"
        if streams and (self.start or self.end is not None):
            opts["map_chapters"] = "-1"  # chapter times would not match a cut
        return streams

    # -- writing

    def write(self, frame: np.ndarray, handed_over: bool = False) -> None:
        """Queue one frame; raises SwapcliError if ffmpeg has failed. The frame is copied, as the
        caller may reuse its array, unless `handed_over` says the caller never touches it again
        (a 1080p copy costs about 1 ms)."""
        if self._finished:
            raise SwapcliError("write() after the video writer was closed")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame of shape {(self.height, self.width, 3)}, "
                             f"got {frame.dtype} {frame.shape}")
        self._start()
        if self._marker is not None:  # marked on the encoder thread
            keep = handed_over and frame.flags.c_contiguous
            self._put(frame if keep else np.array(frame, order="C", copy=True))
        else:
            self._put(np.ascontiguousarray(frame).tobytes())
        self.frames_written += 1

    def _put(self, item: object) -> None:
        while True:
            if self._thread_error is not None or (self._proc and self._proc.poll() is not None):
                raise self._failure()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _pump(self) -> None:
        """Encoder thread: frames in queue order -> (marking pool) -> ffmpeg's stdin, in order."""
        assert self._proc is not None and self._proc.popen.stdin is not None
        stdin = self._proc.popen.stdin
        # marked frames in flight, oldest first: the pool's workers plus one ready to write
        pending: deque[Future[np.ndarray]] = deque()
        try:
            while not self._stop.is_set():
                try:  # with frames in flight, never wait for input: write the oldest instead
                    item = self._queue.get(timeout=0.1) if not pending else self._queue.get_nowait()
                except queue.Empty:
                    if pending and not self._write(stdin, pending.popleft()):
                        return
                    continue
                if item is _END:
                    while pending:
                        if not self._write(stdin, pending.popleft()):
                            return
                    stdin.close()
                    return
                if isinstance(item, np.ndarray):
                    assert self._marker is not None and self._pool is not None
                    try:  # in frame order: tracks motion (a plain callable marker: all on a worker)
                        prepare = getattr(self._marker, "prepare", None)
                        job = prepare(item) if prepare is not None else functools.partial(self._marker, item)
                    except Exception as exc:  # noqa: BLE001 - reported by the caller's thread
                        self._marking_failed(exc)
                        return
                    pending.append(self._pool.submit(job))
                    while pending and (len(pending) > self.workers or pending[0].done()):
                        if not self._write(stdin, pending.popleft()):
                            return
                else:
                    stdin.write(item)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:  # ffmpeg died (EPIPE) or we closed the pipe
            if not self._stop.is_set():
                self._thread_error = exc
        finally:
            for future in pending:
                future.cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    def _write(self, stdin: object, future: Future[np.ndarray]) -> bool:
        """Write one marked frame (waiting for its worker); False when marking failed or we stop."""
        try:
            frame = np.ascontiguousarray(future.result())
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            if not self._stop.is_set():
                self._marking_failed(exc)
            return False
        stdin.write(memoryview(frame).cast("B"))  # type: ignore[attr-defined]
        return True

    def _marking_failed(self, exc: BaseException) -> None:
        self._thread_error = _MarkingError(f"marking frame failed: {type(exc).__name__}: {exc}")
        assert self._proc is not None
        self._proc.kill()  # no point encoding on; _failure() must not wait for it

    def _failure(self) -> SwapcliError:
        """The error to raise once ffmpeg has failed, from its own last words."""
        assert self._proc is not None
        if isinstance(self._thread_error, _MarkingError):
            error = self._thread_error
            self.abort()
            return error
        try:
            rc = self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = -9
        line = self._proc.error_line()
        self.abort()
        msg = f"encoding {self.path.name} failed (ffmpeg exit {rc}): {line}"
        if rc in (-25, 153):  # SIGXFSZ: the file-size limit (ulimit -f) or a full quota stopped ffmpeg
            return OutputError(f"cannot write {self.path}: file too large for this disk or limit (ffmpeg stopped)")
        if any(s in line for s in ("No space left", "Permission denied", "Read-only file system",
                                   "Disk quota")):
            return OutputError(msg)
        return SwapcliError(msg)

    # -- finishing

    def close(self) -> None:
        """Finish encoding and atomically move the file into place; abort on any failure."""
        if self._finished:
            return
        try:
            if self.frames_written == 0:
                raise SwapcliError(f"{self.path.name}: no frames were written")
            self._put(_END)
            assert self._thread is not None and self._proc is not None
            self._thread.join()
            if self._thread_error is not None:
                raise self._failure()
            rc = self._proc.wait()
            if rc != 0:
                raise self._failure()
            check_complete(self.tmp_path, self.frames_written, self.path)
            publish(self.tmp_path, self.path, self.overwrite)
            self._finished = True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Kill and reap ffmpeg and delete the temp file; the output is left untouched. Idempotent."""
        self._finished = True
        self._stop.set()
        if getattr(self, "_proc", None) is not None:
            self._proc.kill()  # type: ignore[union-attr]
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        pool = getattr(self, "_pool", None)
        if pool is not None:  # running jobs finish in milliseconds; queued ones are dropped
            pool.shutdown(wait=thread is not threading.current_thread(), cancel_futures=True)
        tmp = getattr(self, "tmp_path", None)
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError as exc:  # pragma: no cover
                log.warning("could not remove temporary file %s: %s", tmp, exc)

    def __enter__(self) -> VideoWriter:
        self._start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        try:
            if not self._finished:
                self.abort()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass
