"""Several devices on one machine: ``--device cuda:0,1`` (or ``cpu,cpu``).

Device lists (:func:`parse_devices`)
    ``cuda:0,1`` is short for ``cuda:0,cuda:1`` (a bare number repeats the
    family before it); ``cuda:0,cuda:1``, ``tensorrt:0,1`` and ``cpu,cpu`` (two
    CPU worker processes) are lists too. Every worker gets exactly one
    single-device string. A single device (no comma) is passed through
    untouched, so it behaves exactly as before (the engine validates it).
    In a list, items must be ``cpu``, ``cuda[:N]`` or ``tensorrt[:N]``; ``auto``
    is refused (say which devices), and so is mixing the CPU with GPUs: the
    video is split in equal parts, so the CPU part would hold every GPU up.
    Mixing ``cuda`` and ``tensorrt`` GPUs is allowed, as are repeats
    (``cuda:0,cuda:0``: two processes sharing one GPU).

Video (:func:`swap_video_split`)
    The target's frames ``[0, n)`` (after ``--start/--end/--fps``: the ranges
    are counted over the trimmed / resampled stream the reader yields) are cut
    into K contiguous ranges, one per device. K worker processes (spawn
    context: onnxruntime, CUDA and fork do not mix) each build their own
    Swapper on their device, load the sources from their paths, and run
    ``swap_video`` with ``VideoOptions.frame_range`` into a video-only segment
    in a private hidden folder beside the output (``.STEM.swapcli-split-XXXX``,
    same container as the output). The last range runs to the end of the
    stream, so a probe that miscounts by a frame loses nothing. This process
    then joins the segments with ffmpeg's concat demuxer and ``-c:v copy`` (no
    re-encode), takes audio and subtitles from the original target (cut like
    the reader: copied when the container can hold them, else AAC, as
    VideoWriter does), writes the AI-generated container tags when marking is
    on (every frame is already watermarked by its worker), and renames the
    result into place atomically. The temp folder is always removed.

    Seams: face tracks restart at every segment boundary (each worker has its
    own tracker: a 'largest' face is re-chosen, a missed detection right after
    a seam cannot be bridged from the frames before it, and mask smoothing
    starts afresh). Every segment starts with a keyframe. Frame count, frame
    rate and audio equal the single-device output's.

    Ctrl-C, SIGTERM or a failing worker: every worker is stopped (SIGINT, then
    SIGKILL for itself and its ffmpeg children if it does not stop), the temp
    folder is deleted and no output is written. The exit code is 130 for an
    interrupt, else the failing worker's error's code and one-line message.
    (Tests make one worker fail with ``SWAPCLI_TEST_FAIL_SEGMENT=INDEX`` in the environment.)

    Cost: each worker decodes its input from the start and drops the frames
    before its range (swap_video's frame_range contract), so the last worker
    decodes the whole stream; decoding is cheap next to the models on a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from swapcli.core.errors import EXIT_FAILURE, OutputError, SwapcliError, UsageError
from swapcli.core.options import EngineOptions, OutputOptions, SelectOptions
from swapcli.core.signals import sigint_ignored
from swapcli.write.video import resolve_codec

log = logging.getLogger("swapcli")

FAMILIES = ("cpu", "cuda", "tensorrt")
_ITEM = re.compile(r"^(cpu|cuda|tensorrt)(?::(\d+))?$")
_OPEN_END = 1 << 62  # the last segment's frame_range end: "to the end of the stream"
FAIL_ENV = "SWAPCLI_TEST_FAIL_SEGMENT"  # tests only: the worker of this segment index fails at once


# --------------------------------------------------------------------------- device lists


def parse_devices(text: str) -> list[str]:
    """``--device`` as a list of single-device strings (see the module docstring).

    One device (no comma) comes back unchanged: ``["auto"]``, ``["cuda:1"]``.
    Raises UsageError (exit 2) with a one-line message for a malformed list.
    """
    raw = (text or "").strip()
    if "," not in raw:
        return [raw or "auto"]
    items = [part.strip().lower() for part in raw.split(",")]
    if any(not item for item in items):
        raise UsageError(f"--device '{text}': empty item in the list (write e.g. cuda:0,1 or cpu,cpu)")
    devices: list[str] = []
    family: str | None = None
    for item in items:
        if item.isdigit():
            if family is None or family == "cpu":
                raise UsageError(f"--device '{text}': '{item}' needs a device before it (e.g. cuda:0,1)")
            item = f"{family}:{int(item)}"
        elif item == "auto":
            raise UsageError(f"--device '{text}': 'auto' cannot be part of a list; name the devices "
                             "(e.g. cuda:0,1 or cpu,cpu)")
        m = _ITEM.match(item)
        if not m:
            raise UsageError(f"--device '{text}': '{item}' is not a device (use cpu, cuda[:N] or tensorrt[:N])")
        family = m.group(1)
        devices.append(f"{family}:{int(m.group(2))}" if m.group(2) is not None else family)
    kinds = {"cpu" if d == "cpu" else "gpu" for d in devices}
    if len(kinds) > 1:
        raise UsageError(f"--device '{text}': mixes the CPU and GPUs; the work is split in equal parts, "
                         "so the CPU part would hold up the GPUs (list GPUs only, or cpu,cpu)")
    return devices


def device_label(devices: Sequence[str]) -> str:
    return ",".join(devices)


# --------------------------------------------------------------------------- splitting


def split_ranges(n: int, k: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into ``min(k, n)`` contiguous, non-empty ranges of (almost) equal length."""
    k = max(1, min(k, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def concat_list(paths: Sequence[Path]) -> str:
    """An ffconcat list naming ``paths`` (absolute ``file:`` URLs, quoted for the list syntax)."""
    lines = ["ffconcat version 1.0"]
    for path in paths:
        url = "file:" + os.path.abspath(os.fspath(path))
        if "\n" in url or "\r" in url:
            raise OutputError(f"{path}: a line break in the path cannot be written to an ffmpeg concat list")
        lines.append("file '" + url.replace("'", "'\\''") + "'")
    return "\n".join(lines) + "\n"


@dataclass
class SplitVideoResult:
    """Extra facts of a split run, beside the VideoResult (engine name, timings per device)."""

    engine: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    segments: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class SegmentJob:
    """Everything a worker needs to swap one frame range (picklable: crosses to the worker)."""

    index: int
    device: str
    frame_range: tuple[int, int]
    engine: EngineOptions
    groups: tuple[tuple[str, ...], ...]
    references: tuple[str, ...] | None
    target: str
    segment: str
    select: SelectOptions
    video: Any  # pipeline.video.VideoOptions
    out: OutputOptions
    inputs: tuple[str, ...]
    log_level: int = logging.INFO
    threads: int = 0


class WorkerError(SwapcliError):
    """A worker's failure, re-raised here with its exit code and one-line message."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):
        return (WorkerError, (str(self), self.exit_code))


# --------------------------------------------------------------------------- the worker process

_EVENTS = None
_STOP_EVENT = None
_STOPPING = False
_GUARDED = False  # inside the reporting try: an interrupt there is caught and reported


def _on_signal(signum: int, frame: object) -> None:
    """The first SIGINT/SIGTERM aborts the segment (writers clean up); later ones are ignored.

    Before the worker reaches its reporting try (still importing, still setting up) a signal is
    only recorded; the try checks the record first, so a stop at any moment of the worker's life
    is reported as "interrupted", never as a traceback."""
    global _STOPPING
    if _STOPPING:
        return
    _STOPPING = True
    if _GUARDED:
        raise KeyboardInterrupt


def _put(item: tuple) -> None:
    with contextlib.suppress(Exception):
        _EVENTS.put(item)  # type: ignore[union-attr]


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:500]


def _run_segment(job: SegmentJob, events: Any, stop: Any) -> None:
    """Worker entry point: swap one frame range into one segment file; report on ``events``."""
    global _EVENTS, _STOP_EVENT, _STOPPING, _GUARDED
    _EVENTS, _STOP_EVENT = events, stop
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    from swapcli.pipeline import batch as pb
    from swapcli.pipeline.batch import _die_with_parent, _QueueLog

    _die_with_parent()
    pb._EVENTS = events  # _QueueLog forwards this process's log records to the parent
    logger = logging.getLogger("swapcli")
    logger.handlers[:] = [_QueueLog()]
    logger.setLevel(job.log_level)
    logger.propagate = False
    _put(("pid", job.index, os.getpid()))
    try:
        _run_segment_reporting(job)
    finally:
        _STOPPING = True  # a signal from now on is ignored: nothing left to clean up, no traceback
        _GUARDED = False


def _run_segment_reporting(job: SegmentJob) -> None:
    global _GUARDED
    try:
        _GUARDED = True
        if _STOPPING:  # told to stop while starting up
            raise KeyboardInterrupt
        if os.environ.get(FAIL_ENV) == str(job.index):
            raise SwapcliError(f"test failure injected in segment {job.index}")
        if _STOP_EVENT.is_set():  # type: ignore[union-attr]
            raise KeyboardInterrupt
        payload = _swap_segment(job)
        _put(("done", job.index, payload))
    except KeyboardInterrupt:
        import gc

        gc.collect()  # an orphaned writer's __del__ aborts it now (kills ffmpeg, deletes its temp file)
        _put(("interrupted", job.index))
    except SwapcliError as exc:
        _put(("error", job.index, int(getattr(exc, "exit_code", EXIT_FAILURE)), _one_line(str(exc))))
    except MemoryError:
        _put(("error", job.index, EXIT_FAILURE, f"out of memory on {job.device}"))
    except BaseException as exc:  # noqa: BLE001 - a bug: one line, the parent decides
        log.debug("internal error in segment %d", job.index, exc_info=True)
        _put(("error", job.index, EXIT_FAILURE,
              f"internal error on {job.device}: {type(exc).__name__}: {_one_line(str(exc)) or '-'}"))


def _swap_segment(job: SegmentJob) -> dict:
    from swapcli.pipeline.swapper import Swapper
    from swapcli.pipeline.video import swap_video

    engine = replace(job.engine, device=job.device)
    if job.threads and not engine.threads:
        engine = replace(engine, threads=job.threads)
        with contextlib.suppress(Exception):
            import cv2

            cv2.setNumThreads(job.threads)
    swapper = Swapper(engine)
    groups = [swapper.load_sources([Path(p) for p in group]) for group in job.groups]
    refs = [swapper.reference_embedding(Path(p)) for p in job.references] if job.references else None
    if _STOP_EVENT is not None and _STOP_EVENT.is_set():  # stopped while loading (deaf to SIGINT until then)
        raise KeyboardInterrupt
    a, b = job.frame_range
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        if _STOP_EVENT is not None and _STOP_EVENT.is_set():
            raise KeyboardInterrupt  # the parent gave up (another worker failed, or Ctrl-C)
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            with contextlib.suppress(Exception):
                _EVENTS.put_nowait(("progress", job.index, done, total))  # type: ignore[union-attr]

    video = replace(job.video, frame_range=(a, b))
    result = swap_video(swapper, groups, Path(job.target), Path(job.segment), job.select, video, job.out,
                        references=refs, inputs=[Path(p) for p in job.inputs], progress=progress)
    return {"frames_read": result.frames_read, "frames_written": result.frames_written,
            "frames_swapped": result.frames_swapped, "faces_per_frame": list(result.faces_per_frame),
            "tracks": list(result.tracks), "bridged": result.bridged, "seconds": result.seconds,
            "notes": list(result.notes), "engine": swapper.engine.name,
            "timings_ms": swapper.clock.timings.to_json()}


# --------------------------------------------------------------------------- the parent


def swap_video_split(
    engine: EngineOptions,
    devices: Sequence[str],
    groups: Sequence[Sequence[Path | str]],
    target: Path,
    output: Path,
    select: SelectOptions,
    video: Any,
    out: OutputOptions,
    references: Sequence[Path | str] | None = None,
    inputs: Sequence[Path] = (),
    progress: Callable[[int, int | None], None] | None = None,
):
    """Swap ``target`` into ``output`` with one worker process per device (see the module docstring).

    ``groups[k]`` are the source photo paths for the k-th reference (``--map``), or one group
    without references, as for ``swap_video``. Returns a ``VideoResult`` (summed counts,
    per-device notes) with a ``split`` attribute (SplitVideoResult: engine name, timings).
    """
    from swapcli.pipeline.video import VideoResult
    from swapcli.read.video import FrameReader, probe
    from swapcli.select.faces import parse_faces
    from swapcli.write.atomic import check_output
    from swapcli.write.video import CONTAINERS

    parse_faces(select.faces)
    if references and len(groups) != len(references):
        raise UsageError("each --map needs one source and one reference")
    target, output = Path(target), Path(output)
    check_output(output, [target, *inputs], out.overwrite)
    if output.suffix.lower() not in CONTAINERS:
        raise OutputError(f"{output.name}: unsupported output type '{output.suffix}' (use {', '.join(CONTAINERS)})")
    info = probe(target)
    reader = FrameReader(info, start=video.start, end=video.end, fps=video.fps)  # checks start/end/fps
    n = reader.expected_frames or info.frame_count or 0
    if n < 1:
        raise UsageError(f"{target}: no frames to process")
    ranges = split_ranges(n, len(devices))
    used = list(devices[:len(ranges)])
    video = replace(video, codec=resolve_codec(video.codec))
    started = time.perf_counter()
    result = VideoResult(target, output, input_info={
        "width": info.width, "height": info.height, "fps": str(info.fps), "frames": info.frame_count,
        "duration": round(info.duration, 3), "rotation": info.rotation, "audio": info.audio_streams,
        "vfr": info.is_vfr})
    parent = output.parent if str(output.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.stem}.swapcli-split-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write to {parent}: {exc.strerror}") from None
    try:
        segments = [tmp / f"segment-{i:03d}{output.suffix.lower()}" for i in range(len(ranges))]
        jobs = []
        threads = max(1, _cpu_count() // len(ranges))
        for i, (device, (a, b)) in enumerate(zip(used, ranges)):
            jobs.append(SegmentJob(
                index=i, device=device, frame_range=(a, _OPEN_END if i == len(ranges) - 1 else b),
                engine=engine, groups=tuple(tuple(str(p) for p in g) for g in groups),
                references=tuple(str(p) for p in references) if references else None,
                target=str(target), segment=str(segments[i]), select=select, video=video, out=out,
                inputs=tuple(str(p) for p in inputs), log_level=logging.getLogger("swapcli").level,
                threads=threads))
        payloads = _run_workers(jobs, ranges, n, progress)
        notes = _merge(result, payloads, used, ranges)
        joined = tmp / f"joined{output.suffix.lower()}"
        notes += _concat(segments, joined, info, video, out, output.name)
        if n and result.frames_read < n - 1:  # decoding stopped early: a cut or damaged file
            notes.append(f"{target}: decoding ended after {result.frames_read} of {n} frames "
                         "(truncated or damaged file?); the output stops there too")
        try:
            os.replace(joined, output)
        except OSError as exc:
            raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.notes = notes
    result.seconds = time.perf_counter() - started
    return result


def _cpu_count() -> int:
    from swapcli.pipeline.batch import cpu_count

    return cpu_count()


def _merge(result, payloads: list[dict], devices: Sequence[str], ranges: Sequence[tuple[int, int]]) -> list[str]:
    """Sum the segments' counts into ``result``; return the notes (deduplicated, per device)."""
    notes: list[str] = []
    timings: dict[str, float] = {}
    split = SplitVideoResult(engine=payloads[0].get("engine", "") if payloads else "")
    start = 0
    for i, (payload, device) in enumerate(zip(payloads, devices)):
        result.frames_read = max(result.frames_read, payload["frames_read"])  # each decodes from the start
        result.frames_written += payload["frames_written"]
        result.frames_swapped += payload["frames_swapped"]
        result.faces_per_frame += payload["faces_per_frame"]
        result.bridged += payload["bridged"]
        result.tracks += [{**track, "segment": i} for track in payload["tracks"]]
        for key, ms in payload["timings_ms"].items():
            timings[key] = round(timings.get(key, 0.0) + ms, 1)
        end = start + payload["frames_written"]
        split.segments.append({"device": device, "frames": [start, end], "frames_swapped": payload["frames_swapped"],
                               "seconds": round(payload["seconds"], 3)})
        for note in payload["notes"]:
            if note not in notes:
                notes.append(note)
        start = end
    split.timings_ms = timings
    result.split = split
    if len(payloads) > 1:
        parts = ", ".join(f"{s['device']} frames {s['frames'][0]}-{s['frames'][1] - 1} "
                          f"({s['frames_swapped']} swapped, {s['seconds']:.1f} s)" for s in split.segments)
        notes.append(f"split across {len(payloads)} devices: {parts}; face tracks restart at each segment boundary")
    return notes


def _run_workers(jobs: Sequence[SegmentJob], ranges: Sequence[tuple[int, int]], total: int,
                 progress: Callable[[int, int | None], None] | None) -> list[dict]:
    """Start one process per job, relay progress and logs, and return their payloads in order.

    Any failure, Ctrl-C or SIGTERM (KeyboardInterrupt here) stops every worker first."""
    import multiprocessing
    import queue as queue_mod

    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    stop = ctx.Event()
    procs: list[Any] = []
    pids: dict[int, int] = {}
    done: dict[int, int] = {}
    payloads: dict[int, dict] = {}
    seen_logs: set[str] = set()
    failure: list[tuple[int, str]] = []
    interrupted = [False]

    def handle(item: tuple) -> None:
        kind = item[0]
        if kind == "pid":
            pids[item[1]] = item[2]
        elif kind == "progress":
            _, i, count, _total = item
            a = ranges[i][0]
            done[i] = max(0, min(_processed(count, a), ranges[i][1] - a))
            if progress is not None:
                progress(sum(done.values()), total)
        elif kind == "log":
            _, level, message = item
            if message not in seen_logs:  # K workers say the same things
                seen_logs.add(message)
                log.log(level, message)
        elif kind == "done":
            payloads[item[1]] = item[2]
            done[item[1]] = item[2]["frames_written"]
            if progress is not None:
                progress(sum(done.values()), total)
        elif kind == "error" and not failure:
            failure.append((item[2], item[3]))
        elif kind == "interrupted":
            interrupted[0] = True

    def drain(timeout: float = 0.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = events.get(timeout=max(0.0, deadline - time.monotonic())) if timeout else events.get_nowait()
            except (queue_mod.Empty, OSError, ValueError, EOFError):
                return
            handle(item)

    try:
        with sigint_ignored():
            for job in jobs:
                proc = ctx.Process(target=_run_segment, args=(job, events, stop), name=f"swapcli-{job.device}",
                                   daemon=True)
                proc.start()
                procs.append(proc)
        while len(payloads) < len(jobs):
            drain(0.2)
            if failure:
                raise WorkerError(failure[0][1], failure[0][0])
            if interrupted[0]:  # a worker got the signal (Ctrl-C reaches the whole process group)
                raise KeyboardInterrupt
            for i, proc in enumerate(procs):
                if i not in payloads and proc.exitcode is not None:
                    drain(1.0)  # its last words may still be in the pipe
                    if failure:
                        raise WorkerError(failure[0][1], failure[0][0])
                    if interrupted[0]:
                        raise KeyboardInterrupt
                    if i not in payloads:
                        code = proc.exitcode
                        why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                        raise WorkerError(f"the worker on {jobs[i].device} died ({why}); "
                                          "out of memory? try fewer devices", EXIT_FAILURE)
    except BaseException:
        with sigint_ignored():
            _stop_workers(procs, pids, stop, drain)
            with contextlib.suppress(Exception):
                events.close()
                events.join_thread()
        raise
    for proc in procs:
        proc.join(10)
    with contextlib.suppress(Exception):
        events.close()
        events.join_thread()
    return [payloads[i] for i in range(len(jobs))]


def _processed(count: int, a: int) -> int:
    """Frames of its range a worker has done, from the count its swap_video progress reports.

    swap_video counts the frames it processed in its frame range (skipped frames before the
    range are not reported)."""
    return count


def _stop_workers(procs: Sequence[Any], pids: dict[int, int], stop: Any, drain: Callable[[float], None]) -> None:
    """SIGINT every worker (writers delete their temp files, kill their ffmpeg), wait, then SIGKILL
    what is left together with its children."""
    stop.set()
    for proc in procs:
        if proc.exitcode is None and proc.pid:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(p.exitcode is None for p in procs):
        drain(0.1)
    stuck = [p for p in procs if p.exitcode is None]
    for proc in stuck:
        _kill_tree(proc.pid)
    for proc in procs:
        proc.join(5)


def _kill_tree(pid: int | None) -> None:
    if not pid:
        return
    try:
        import psutil

        kids = psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - gone already, or no psutil
        kids = []
    for p in [pid, *(k.pid for k in kids)]:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


# --------------------------------------------------------------------------- joining


def _concat(segments: Sequence[Path], joined: Path, info: Any, video: Any, out: OutputOptions,
            name: str) -> list[str]:
    """Join the video-only segments (stream copy) with the original's audio and subtitles."""
    from swapcli.core import ffmpeg as ff
    from swapcli.write.video import (
        AAC_BITRATE,
        CONTAINERS,
        audio_copyable,
        subtitle_codec,
    )

    listing = joined.with_name("segments.ffconcat")
    try:
        listing.write_text(concat_list(segments), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {listing}: {exc.strerror or exc}") from None
    container = CONTAINERS[joined.suffix.lower()]
    ext = joined.suffix.lower()
    notes: list[str] = []
    cmd = [*ff.base_cmd("error"), "-y", "-f", "concat", "-safe", "0", "-i", ff.media_path(listing)]
    maps = ["-map", "0:v:0", "-c:v", "copy"]
    source: list[str] = []
    if video.start:
        source += ["-ss", f"{video.start:.6f}"]
    if video.end is not None:
        source += ["-t", f"{video.end - (video.start or 0):.6f}"]
    for i, codec in enumerate(info.audio_streams):
        maps += ["-map", f"1:a:{i}"]
        if audio_copyable(container, codec):
            maps += [f"-c:a:{i}", "copy"]
        else:
            maps += [f"-c:a:{i}", "aac", f"-b:a:{i}", AAC_BITRATE]
            notes.append(f"audio stream {i} ({codec}) re-encoded to AAC {AAC_BITRATE}/s: "
                         f"{ext} files cannot hold {codec} as-is")
    out_sub = 0
    for i, codec in enumerate(info.subtitle_codecs):
        target = subtitle_codec(container, codec)
        if target is None:
            notes.append(f"subtitle stream {i} ({codec}) dropped: {ext} files cannot hold bitmap subtitles")
            continue
        maps += ["-map", f"1:s:{i}", f"-c:s:{out_sub}", target]
        out_sub += 1
    uses_source = any(m.startswith("1:") for m in maps)
    if uses_source:
        cmd += [*source, "-i", ff.media_path(info.path)]
        maps += ["-map_metadata", "1"]
        if video.start or video.end is not None:
            maps += ["-map_chapters", "-1"]
    else:
        maps += ["-map_metadata", "-1"]
    if container in ("mp4", "mov"):
        maps += ["-movflags", "+faststart+use_metadata_tags" if out.mark else "+faststart"]
    if out.mark:  # after -map_metadata, so these win over the input's tags of the same name
        from swapcli.mark.metadata import video_tags

        tags = dict(video_tags())
        if container in ("mp4", "mov"):
            tags.update(major_brand="", minor_version="", compatible_brands="")
        maps += [arg for key, value in tags.items() for arg in ("-metadata", f"{key}={value}")]
    cmd += [*maps, "-f", container, ff.media_path(joined)]
    proc = ff.Process(cmd)
    try:
        rc = proc.wait()
    except BaseException:
        proc.kill()
        raise
    if rc != 0:
        raise SwapcliError(f"joining the segments of {name} failed (ffmpeg exit {rc}): {proc.error_line()}")
    return notes
