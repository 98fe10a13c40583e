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
    into K contiguous ranges, one per device. K workers of the executor
    (pipeline/executor.py: spawned processes; with ``--cluster``, Ray actors,
    one range per cluster worker, the target and segments travelling through
    the object store unless --shared-fs) each build their own
    Swapper on their device, load the sources from their paths, and run
    ``swap_video`` with ``VideoOptions.frame_range`` into a video-only segment
    in a private hidden folder beside the output (``.STEM.swapcli-PID-XXXX-split``,
    same container as the output). The last range runs to the end of the
    stream, so a probe that miscounts by a frame loses nothing. This process
    then joins the segments with ffmpeg's concat demuxer and ``-c:v copy`` (no
    re-encode), takes audio and subtitles from the original target (cut like
    the reader: copied when the container can hold them, else AAC, as
    VideoWriter does), writes the AI-generated container tags when marking is
    on (every frame is already watermarked by its worker), and renames the
    result into place atomically. The temp folder is always removed.

    Seams: each worker has its own tracker, so a 'largest' or N face is chosen
    afresh, a missed detection right after a seam cannot be bridged from the
    frames before it, and mask smoothing starts afresh. The person is carried
    across: each segment reports the identity it swapped first and last, and a
    segment that starts with another person than its predecessor ended with is
    redone following that person (`_carry_identity`). Every segment starts with a keyframe. Frame count, frame
    rate and audio equal the single-device output's.

    Ctrl-C, SIGTERM or a failing worker: every worker is stopped by the executor
    (SIGINT, then SIGKILL for itself and its ffmpeg children if it does not stop), the temp
    folder is deleted and no output is written. The exit code is 130 for an
    interrupt, else the failing worker's error's code and one-line message.
    (Tests make one worker fail with ``SWAPCLI_TEST_FAIL_SEGMENT=INDEX`` in the environment.)

    Cost: each worker decodes its input from the start and drops the frames
    before its range (swap_video's frame_range contract), so the last worker
    decodes the whole stream; decoding is cheap next to the models on a GPU.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from swapcli.core.device import share_cores
from swapcli.core.errors import OutputError, SwapcliError, UsageError
from swapcli.core.options import EngineOptions, OutputOptions, SelectOptions
from swapcli.pipeline import executor as _executor
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
class SegmentSetup:
    """What a worker needs to build its Swapper once (picklable: crosses to the worker)."""

    engine: EngineOptions
    groups: tuple[tuple[str, ...], ...]
    references: tuple[str, ...] | None
    reference_vectors: tuple[tuple[float, ...], ...] | None = None  # identities to follow (a segment redone)


@dataclass(frozen=True)
class SegmentJob:
    """One frame range of the target into one segment file (picklable)."""

    index: int
    frame_range: tuple[int, int]
    target: str
    segment: str
    select: SelectOptions
    video: Any  # pipeline.video.VideoOptions
    out: OutputOptions
    inputs: tuple[str, ...]


WorkerError = _executor.WorkerError


# --------------------------------------------------------------------------- the app the executor runs


def make_segment_worker(setup: SegmentSetup, paths: Callable[[str], str] = _executor.same_path) -> "SegmentApp":
    """The executor's factory: a Swapper on this slot's device, the sources analysed once."""
    from swapcli.pipeline.swapper import Swapper

    share_cores(setup.engine.threads)
    swapper = Swapper(setup.engine)
    groups = [swapper.load_sources([Path(paths(p)) for p in group]) for group in setup.groups]
    refs = [swapper.reference_embedding(Path(paths(p))) for p in setup.references] if setup.references else None
    if setup.reference_vectors:
        import numpy as np

        refs = [np.asarray(v, dtype=np.float32) for v in setup.reference_vectors]
    return SegmentApp(swapper, groups, refs)


class SegmentApp:
    def __init__(self, swapper: Any, groups: list, refs: list | None) -> None:
        self.swapper, self.groups, self.refs = swapper, groups, refs

    def run(self, job: SegmentJob, progress: Callable[[int, int | None], None],
            paths: Callable[[str], str] = _executor.same_path) -> dict:
        from swapcli.core.timing import Clock
        from swapcli.pipeline.video import swap_video

        if os.environ.get(FAIL_ENV) == str(job.index):
            raise SwapcliError(f"test failure injected in segment {job.index}")
        self.swapper.clock = Clock()
        video = replace(job.video, frame_range=job.frame_range)
        result = swap_video(self.swapper, self.groups, Path(paths(job.target)), Path(paths(job.segment)), job.select,
                            video, job.out, references=self.refs, inputs=[Path(paths(p)) for p in job.inputs],
                            progress=progress)
        return {"frames_read": result.frames_read, "frames_written": result.frames_written,
                "frames_swapped": result.frames_swapped, "faces_per_frame": list(result.faces_per_frame),
                "tracks": list(result.tracks), "bridged": result.bridged, "seconds": result.seconds,
                "notes": list(result.notes), "engine": self.swapper.engine.name,
                "timings_ms": self.swapper.clock.timings.to_json(), "identities": list(result.identities)}


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
    executor: Any = None,
):
    """Swap ``target`` into ``output`` with one worker process per device (see the module docstring),
    or with ``executor`` (a cluster: ``cluster.RayPool``) one segment per worker it plans.

    ``groups[k]`` are the source photo paths for the k-th reference (``--map``), or one group
    without references, as for ``swap_video``. Returns a ``VideoResult`` (summed counts,
    per-device notes) with a ``split`` attribute (SplitVideoResult: engine name, timings).
    """
    from swapcli.pipeline.video import VideoResult
    from swapcli.read.video import FrameReader, probe
    from swapcli.select.faces import parse_faces
    from swapcli.write.atomic import check_output, publish, reserve_temp_dir
    from swapcli.write.video import CONTAINERS, check_complete

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
    if executor is None:
        specs = _executor.local_plan(len(devices), devices, n)
        executor = _executor.local(len(specs))
    else:
        specs = executor.plan(0, devices, n)
    ranges = split_ranges(n, len(specs))
    specs = specs[:len(ranges)]
    used = [spec.label for spec in specs]
    video = replace(video, codec=resolve_codec(video.codec))
    started = time.perf_counter()
    result = VideoResult(target, output, input_info={
        "width": info.width, "height": info.height, "fps": str(info.fps), "frames": info.frame_count,
        "duration": round(info.duration, 3), "rotation": info.rotation, "audio": info.audio_streams,
        "vfr": info.is_vfr})
    tmp = reserve_temp_dir(output)
    try:
        segments = [tmp / f"segment-{i:03d}{output.suffix.lower()}" for i in range(len(ranges))]
        setup = SegmentSetup(engine=engine, groups=tuple(tuple(str(p) for p in g) for g in groups),
                             references=tuple(str(p) for p in references) if references else None)
        jobs = [SegmentJob(index=i, frame_range=(a, _OPEN_END if i == len(ranges) - 1 else b), target=str(target),
                           segment=str(segments[i]), select=select, video=video, out=out,
                           inputs=tuple(str(p) for p in inputs))
                for i, (a, b) in enumerate(ranges)]
        photos = [*(p for g in setup.groups for p in g), *(setup.references or ())]
        payloads = _run_segments(executor, specs, setup, jobs, photos, n, progress)
        redone = _carry_identity(executor, specs, setup, jobs, photos, n, payloads, select, references)
        notes = _merge(result, payloads, used, ranges, redone)
        joined = tmp / f"joined{output.suffix.lower()}"
        notes += _concat(segments, joined, info, video, out, output.name)
        if n and result.frames_read < n - 1:  # decoding stopped early: a cut or damaged file
            notes.append(f"{target}: decoding ended after {result.frames_read} of {n} frames "
                         "(truncated or damaged file?); the output stops there too")
        check_complete(joined, result.frames_written, output)
        publish(joined, output, out.overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.notes = notes
    result.seconds = time.perf_counter() - started
    return result


def _carry_identity(executor: Any, specs: Sequence[Any], setup: SegmentSetup, jobs: Sequence[SegmentJob],
                    photos: Sequence[str], total: int, payloads: list[dict], select: SelectOptions,
                    references: Sequence[Path | str] | None) -> list[int]:
    """The same person in every segment. Each segment chose its face afresh; where one face is
    swapped ('largest' or N) and the person a segment starts with is not the one the previous
    segment ended with (identity cosine under --threshold), the segment is redone following that
    person (their embedding as the reference), in order, so a redo carries on to the next border.
    Returns the redone segments."""
    import numpy as np

    if references or select.faces == "all":
        return []  # identity already decides (--reference, --map), or every face is swapped
    redone = []
    for i in range(1, len(jobs)):
        before, first = payloads[i - 1]["identities"][1], payloads[i]["identities"][0]
        if before is None or first is None:
            continue
        a, b = np.asarray(before), np.asarray(first)
        if float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) >= select.threshold:
            continue
        log.info("segment %d started with another person than segment %d ended with: redone following them", i, i - 1)
        job = replace(jobs[i], select=replace(select, faces="largest"))
        follow = replace(setup, reference_vectors=(tuple(before),))
        Path(job.segment).unlink(missing_ok=True)  # the first try's segment is replaced
        payloads[i] = _run_segments(executor, specs[:1], follow, [replace(job, index=0)], photos, total, None)[0]
        redone.append(i)
    return redone


def _merge(result, payloads: list[dict], devices: Sequence[str], ranges: Sequence[tuple[int, int]],
           redone: Sequence[int] = ()) -> list[str]:
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
        carried = f"; redone to follow the same person: segment {', '.join(map(str, redone))}" if redone else ""
        notes.append(f"split across {len(payloads)} devices: {parts}; the person swapped is matched across "
                     f"segment borders by identity{carried}")
    return notes


def _run_segments(executor: Any, specs: Sequence[Any], setup: SegmentSetup, jobs: Sequence[SegmentJob],
                  photos: Sequence[str], total: int, progress: Callable[[int, int | None], None] | None) -> list[dict]:
    """Run the segment jobs on the executor's slots, relay progress and logs, return their payloads in order."""
    done: dict[int, int] = {}
    payloads: dict[int, dict] = {}
    seen_logs: set[str] = set()
    slots = [_executor.Slot(label=spec.label, send=tuple(photos), num_cpus=spec.num_cpus, num_gpus=spec.num_gpus,
                            setup=replace(setup, engine=replace(setup.engine, device=spec.device,
                                                                threads=setup.engine.threads or spec.threads)))
             for spec in specs]
    items = [_executor.Item(job.index, job, send=(job.target,), receive=(job.segment,)) for job in jobs]

    def event(kind: str, *args: Any) -> None:
        if kind == "progress" or kind == "result":
            job = args[0].payload
            if kind == "progress":
                done[job.index] = max(0, min(args[1], job.frame_range[1] - job.frame_range[0]))
            else:
                payloads[job.index] = args[1]
                done[job.index] = args[1]["frames_written"]
            if progress is not None:
                progress(sum(done.values()), total)
        elif kind == "log":
            level, message = args
            if message not in seen_logs:  # K workers say the same things
                seen_logs.add(message)
                log.log(level, message)

    def deliver(item: Any, payload: dict, files: dict[str, Path]) -> dict:
        from swapcli.write.atomic import publish

        tmp = files.get(item.payload.segment)
        if tmp is None:
            raise SwapcliError(f"segment {item.payload.index}: the worker sent no video back")
        publish(tmp, Path(item.payload.segment), True)
        return payload

    executor.run(make_segment_worker, slots, items, event, deliver=deliver)
    return [payloads[i] for i in range(len(jobs))]


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
