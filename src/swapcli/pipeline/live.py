"""swapcli live: newest input frame -> detect/track -> swap -> mark -> output, one at a time.

Real time first. Nothing is queued anywhere: the reader keeps only the newest
frame (read/stream.py), this loop takes it, swaps, marks and writes it, then takes
the newest again. When processing is slower than the input, input frames are
dropped (counted) and the latency stays about one processing time; it never grows
with the length of the session. Latency is measured per frame, from when the
reader got it off ffmpeg's pipe to when the output write returned.

Selection is per track as in `swapcli video` (select/tracking.py), with the
frames' arrival times as timestamps, so dropped frames look like a lower frame
rate to the tracker, not like a jump in time.

Ctrl-C and SIGTERM only ask the loop to stop: the frame in hand is finished, the
input's ffmpeg is killed and reaped, and the output is finalised (a file gets its
index and is moved into place). A second Ctrl-C stops at once (nothing partial
is left: the temp file is removed).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import statistics
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from swapcli.core.options import SelectOptions
from swapcli.pipeline.swapper import FaceJob, Swapper
from swapcli.read.stream import InputSpec, LatestFrameReader
from swapcli.swap.base import SourceFace
from swapcli.write.stream import OutputSpec, Sink, open_sink

log = logging.getLogger("swapcli")

FACE_CYCLE = ("largest", "all")  # then 0, 1, ... up to the faces in view: the `f` key


@dataclass(frozen=True)
class LiveOptions:
    size: tuple[int, int] | None = None  # scale (letterboxed) to this; None keeps the input's size
    fps: float | None = None  # output frame rate; None: the input's
    max_frames: int | None = None  # stop after this many output frames
    mark: bool = True  # invisible watermark on every frame, AI tags on files
    visible_label: str | None = None
    overwrite: bool = False
    test_delay_ms: float = 0.0  # tests: a slower engine (sleep per frame), to see frames drop
    snapshot_dir: Path = Path(".")
    status_every: float = 0.5  # seconds between status callbacks


@dataclass
class LiveStatus:
    """The last couple of seconds, for the status line."""

    fps_in: float
    fps_out: float
    dropped: int
    latency_p50_ms: float
    latency_p95_ms: float
    faces: str


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p95/p99/max/mean of milliseconds (nearest-rank), None when empty."""
    if not values:
        return {k: None for k in ("p50", "p90", "p95", "p99", "max", "mean")}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {"p50": round(rank(50), 1), "p90": round(rank(90), 1), "p95": round(rank(95), 1),
            "p99": round(rank(99), 1), "max": round(ordered[-1], 1), "mean": round(statistics.fmean(ordered), 1)}


@dataclass
class LiveResult:
    input: str
    output: str
    width: int = 0
    height: int = 0
    input_rate: str | None = None  # the input's nominal frame rate, as ffmpeg reported it
    output_rate: str | None = None
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    frames_swapped: int = 0
    seconds: float = 0.0  # first input frame to the end
    stopped: str = ""  # end of input | interrupted | quit key | window closed | max frames
    latency_ms: array = field(default_factory=lambda: array("d"))
    process_ms: array = field(default_factory=lambda: array("d"))  # take -> written: the loop's own time
    snapshots: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        span = self.seconds or None
        return {
            "input": self.input, "output": self.output, "width": self.width, "height": self.height,
            "input_rate": self.input_rate, "output_rate": self.output_rate,
            "frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
            "drop_rate": round(self.dropped / self.frames_in, 3) if self.frames_in else 0.0,
            "frames_swapped": self.frames_swapped,
            "fps_in": round(self.frames_in / span, 2) if span else None,
            "fps_out": round(self.frames_out / span, 2) if span else None,
            "latency_ms": percentiles(self.latency_ms), "process_ms": percentiles(self.process_ms),
            "seconds": round(self.seconds, 3), "stopped": self.stopped, "snapshots": self.snapshots,
            "timings_ms": self.timings_ms,
            "per_frame_ms": {k: round(v / self.frames_out, 1) for k, v in self.timings_ms.items()}
            if self.frames_out else {},
        }


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (the loop then finishes cleanly); a second one raises
    KeyboardInterrupt (stop now). Only the main thread can own signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


class _Session:
    """The per-run state the keys change: selection (and its tracker), snapshots."""

    def __init__(self, swapper: Swapper, select: SelectOptions, reference: np.ndarray | None, fps: float,
                 options: LiveOptions, result: LiveResult) -> None:
        self.swapper, self.select, self.reference = swapper, select, reference
        self.fps, self.options, self.result = fps, options, result
        self.faces = select.faces
        self.faces_seen = 0
        self.tracker = self._tracker()
        from swapcli.analyse.finder import FaceFinder
        from swapcli.pipeline.video import DETECT_EVERY_CPU

        # windows around known faces between whole-frame searches (analyse/finder.py)
        every = 1 if swapper.analyser.on_gpu() else DETECT_EVERY_CPU
        self.finder = FaceFinder(swapper.analyser, swapper.options.det_size, every)
        self.last: np.ndarray | None = None  # the last swapped frame (unmarked), for snapshots

    def _tracker(self):
        from swapcli.select.tracking import Tracker

        return Tracker(select=self.faces, references=[self.reference] if self.reference is not None else None,
                       threshold=self.select.threshold, max_misses=max(4, round(0.4 * self.fps)),
                       order=self.select.face_order)

    def jobs(self, image: np.ndarray, t: float, sources: Sequence[SourceFace]) -> list[FaceJob]:
        from swapcli.select.faces import size_filter

        with self.swapper.clock("detect"):
            found = self.finder.find(image)
        faces, _ = size_filter(found, self.faces, self.select.min_size, self.select.min_share, image.shape)
        self.faces_seen = len(faces)
        with self.swapper.clock("track"):
            tracked = self.tracker.update(faces, t, embed=lambda f: self.swapper.embed(image, f),
                                          landmarks=lambda f: self.swapper.landmarks(image, f))
        return [FaceJob(item.face, sources, item.track.mask_params_at(t)) for item in tracked]

    # -- keys

    def key(self, key: int) -> str | None:
        """Act on a window key; 'quit key' to stop."""
        char = chr(key).lower() if 0 <= key < 256 else ""
        if char == "q" or key == 27:
            return "quit key"
        if char == "s":
            self.snapshot()
        elif char == "m":
            self.toggle_mouth_mask()
        elif char == "f":
            self.cycle_faces()
        return None

    def cycle_faces(self) -> None:
        order = [*FACE_CYCLE, *(str(i) for i in range(max(1, self.faces_seen)))]
        self.faces = order[(order.index(self.faces) + 1) % len(order)] if self.faces in order else order[0]
        self.tracker = self._tracker()  # a new rule: start the selection afresh
        log.info("faces: %s", self.faces)

    def toggle_mouth_mask(self) -> None:
        self.swapper.set_masks(mouth_mask=not self.swapper.options.mouth_mask)
        log.info("mouth mask: %s", "on" if self.swapper.options.mouth_mask else "off")

    def snapshot(self) -> None:
        """The last output frame as swapcli-live-NNNN.png (marked like any output), atomically."""
        if self.last is None:
            return
        from swapcli.core.errors import OutputError
        from swapcli.read.image import LoadedImage
        from swapcli.write.atomic import write_bytes
        from swapcli.write.image import encode

        like = LoadedImage(path=Path("live.png"), bgr=self.last, alpha=None, orientation=1, exif=None, icc=None,
                           format="PNG")
        data = encode(self.last, like, "PNG", mark=self.options.mark, visible_label=self.options.visible_label)
        n = len(self.result.snapshots) + 1
        for _ in range(10_000):
            path = self.options.snapshot_dir / f"swapcli-live-{n:04d}.png"
            if not path.exists():
                try:
                    write_bytes(path, data, overwrite=False)
                except OutputError:  # taken meanwhile (another session): next number
                    n += 1
                    continue
                self.result.snapshots.append(str(path))
                log.info("snapshot: %s", path)
                return
            n += 1


def run_live(
    swapper: Swapper,
    sources: Sequence[SourceFace],
    source: InputSpec,
    output: OutputSpec,
    select: SelectOptions,
    options: LiveOptions,
    reference: np.ndarray | None = None,
    on_status: Callable[[LiveStatus], None] | None = None,
    stop: threading.Event | None = None,
) -> LiveResult:
    """Swap ``sources`` into the live ``source`` until it ends, a signal, a key or ``max_frames``."""
    stop = stop or threading.Event()
    result = LiveResult(input=source.label, output=output.text)
    clock = swapper.clock
    before = dict(clock.timings.ms)
    sink: Sink | None = None
    marker = None
    session: _Session | None = None
    recent: deque[tuple[float, float]] = deque()  # (written at, latency ms) of the last 2 s
    taken = 0
    first_t: float | None = None
    next_status = 0.0
    delay = options.test_delay_ms / 1000.0
    with stop_on_signals(stop), LatestFrameReader(source, options.size) as reader:
        try:
            while True:
                if stop.is_set():
                    result.stopped = "interrupted"
                    break
                frame = reader.take(timeout=0.02 if sink is not None and sink.kind == "window" else 0.1)
                if sink is not None:
                    why = session.key(sink.poll_key()) if session is not None else None
                    if why or sink.user_closed:
                        result.stopped = why or "window closed"
                        break
                if frame is None:
                    if reader.ended:
                        result.stopped = "end of input"
                        break
                    continue
                taken += 1
                start = time.perf_counter()
                image = frame.image
                if sink is None:  # the size is known now
                    fps = options.fps or float(reader.fps or 25)
                    result.width, result.height = image.shape[1], image.shape[0]
                    result.input_rate = str(reader.fps) if reader.fps else None
                    result.output_rate = f"{fps:g}"
                    first_t = frame.t_got
                    session = _Session(swapper, select, reference, float(reader.fps or fps), options, result)
                    sink = open_sink(output, image.shape[1], image.shape[0], Fraction(fps).limit_denominator(1001),
                                     mark=options.mark, overwrite=options.overwrite)
                    if options.mark or options.visible_label is not None:
                        from swapcli.mark import FrameMarker

                        marker = FrameMarker(image.shape[0], image.shape[1], watermark=options.mark,
                                             visible_label=options.visible_label, video=True)
                assert session is not None
                jobs = session.jobs(image, frame.t_got - (first_t or frame.t_got), sources)
                if jobs:
                    swapper.swap_frames([(image, jobs)])
                    result.frames_swapped += 1
                if delay:
                    with clock("test_delay"):
                        time.sleep(delay)
                session.last = image
                if marker is not None:
                    with clock("mark"):
                        shown = marker(image)
                else:
                    shown = image
                with clock("write"):
                    sink.write(shown)
                done = time.perf_counter()
                result.frames_out += 1
                latency = (done - frame.t_got) * 1000
                result.latency_ms.append(latency)
                result.process_ms.append((done - start) * 1000)
                recent.append((done, latency))
                while recent and recent[0][0] < done - 2.0:
                    recent.popleft()
                if on_status is not None and done >= next_status:
                    next_status = done + options.status_every
                    on_status(_status(reader, recent, session.faces))
                if options.max_frames and result.frames_out >= options.max_frames:
                    result.stopped = "max frames"
                    break
            reader.close()  # no more input wanted: stop ffmpeg before finalising the output
            if sink is not None:
                sink.close()
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        finally:
            reader.close()
            if sink is not None and sink.kind == "window":
                sink.close()
    end = time.perf_counter()
    result.frames_in = reader.frames_in
    result.dropped = reader.frames_in - taken
    result.seconds = end - first_t if first_t is not None else 0.0
    result.timings_ms = {k: round(v - before.get(k, 0.0), 1) for k, v in clock.timings.ms.items()
                         if v - before.get(k, 0.0) > 0}
    return result


def _status(reader: LatestFrameReader, recent: deque[tuple[float, float]], faces: str) -> LiveStatus:
    span = recent[-1][0] - recent[0][0] if len(recent) > 1 else 0.0
    lat = percentiles([x for _, x in recent])
    return LiveStatus(fps_in=reader.input_fps, fps_out=(len(recent) - 1) / span if span else 0.0,
                      dropped=reader.dropped, latency_p50_ms=lat["p50"] or 0.0, latency_p95_ms=lat["p95"] or 0.0,
                      faces=faces)
