"""swapcli video: decode -> analyse -> track/select -> swap -> blend -> encode, streaming.

Frames flow through ffmpeg pipes (decoder and encoder run in their own
processes, fed by bounded queues), so memory stays flat whatever the length
and the two cores stay busy. Selection is per track (select/tracking.py), so
a person keeps being swapped through a missed detection and a passer-by is
not swapped for a frame.

Frames are analysed and tracked one by one (tracking is sequential), then
their faces are swapped `batch` frames at a time: one generator call for the
faces of all those frames, which is what keeps a GPU busy. The next batch is
analysed in a second thread meanwhile (core/prefetch.py). The output is the
same as frame by frame; only the grouping and the overlap of work change.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from swapcli.analyse.finder import FaceFinder
from swapcli.core.errors import UsageError
from swapcli.core.options import OutputOptions, SelectOptions
from swapcli.core.prefetch import Prefetch
from swapcli.pipeline.swapper import FaceJob, Swapper
from swapcli.read.video import FrameReader, probe
from swapcli.select.faces import parse_faces, size_filter
from swapcli.swap.base import SourceFace
from swapcli.write.atomic import check_output
from swapcli.write.video import VideoWriter


DETECT_EVERY_CPU = 8  # whole-frame detection at least this often on the CPU (new faces appear within it)
FIRST_BATCH = 2  # frames in the first batch (the rest: VideoOptions.batch)


@dataclass(frozen=True)
class VideoOptions:
    crf: int = 18
    preset: str = "veryfast"
    codec: str = "libx264"
    fps: Fraction | None = None  # resample on purpose; None keeps every input frame
    start: float | None = None
    end: float | None = None
    batch: int = 8  # frames whose faces go through the models together (GPU throughput)
    # Whole-frame face detection at least every N frames, windows around known faces between
    # (analyse/finder.py); None: 8 on the CPU, every frame (batched) on a GPU; 1: every frame.
    detect_every: int | None = None
    # Frames [a, b) only, as a video-only segment (no audio): one share of a --device list.
    frame_range: tuple[int, int] | None = None


@dataclass
class VideoResult:
    target: Path
    output: Path
    frames_read: int = 0
    frames_written: int = 0
    frames_swapped: int = 0
    faces_per_frame: list[int] = field(default_factory=list)
    tracks: list[dict] = field(default_factory=list)
    detection: dict = field(default_factory=dict)  # how faces were found: whole frames, windows, cuts
    identities: list = field(default_factory=lambda: [None, None])  # embeddings swapped first and last (one face)
    bridged: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    input_info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        counts = self.faces_per_frame or [0]
        return {
            "target": str(self.target),
            "output": str(self.output),
            "frames_read": self.frames_read,
            "frames_written": self.frames_written,
            "frames_swapped": self.frames_swapped,
            "faces_swapped": {"total": int(sum(counts)), "min": min(counts), "max": max(counts),
                              "mean": round(statistics.fmean(counts), 3)},
            "bridged_faces": self.bridged,
            "tracks": self.tracks,
            "detection": self.detection,
            "seconds": round(self.seconds, 3),
            "fps": round(self.frames_written / self.seconds, 2) if self.seconds else None,
            "notes": self.notes,
            "input": self.input_info,
        }


def swap_video(
    swapper: Swapper,
    sources: Sequence[Sequence[SourceFace]],
    target: Path,
    output: Path,
    select: SelectOptions,
    video: VideoOptions,
    out: OutputOptions,
    references: Sequence[np.ndarray] | None = None,
    inputs: Sequence[Path] = (),
    progress: Callable[[int, int | None], None] | None = None,
) -> VideoResult:
    """`sources[k]` are the photos for the k-th reference (--map); one group without references."""
    from swapcli.select.tracking import Tracker

    parse_faces(select.faces)
    if references and len(sources) != len(references):
        raise UsageError("each --map needs one source and one reference")
    check_output(output, [target, *inputs], out.overwrite)
    info = probe(target)
    clock = swapper.clock
    result = VideoResult(target, output, input_info={
        "width": info.width, "height": info.height, "fps": str(info.fps), "frames": info.frame_count,
        "duration": round(info.duration, 3), "rotation": info.rotation, "audio": info.audio_streams,
        "vfr": info.is_vfr})
    reader = FrameReader(info, start=video.start, end=video.end, fps=video.fps)
    fps = video.fps or info.fps
    started = time.perf_counter()
    many = bool(references) and len(sources) > 1  # --map: every referenced person, own source
    tracker = Tracker(
        select="all" if many else select.faces,
        references=list(references) if references else None,
        threshold=select.threshold,
        max_misses=max(4, round(0.4 * float(fps))),  # hold a vanished 'largest' face ~0.4 s
        order=select.face_order,
    )
    every = video.detect_every or (1 if swapper.analyser.on_gpu() else DETECT_EVERY_CPU)
    finder = FaceFinder(swapper.analyser, swapper.options.det_size, every) if every > 1 else None
    first, stop = video.frame_range or (0, None)
    if video.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {video.batch}")
    with reader, VideoWriter(output, info.width, info.height, fps, codec=video.codec, crf=video.crf,
                             preset=video.preset, audio_source=None if video.frame_range else info,
                             start=video.start, end=video.end, sar=info.sar, mark=out.mark,
                             visible_label=out.visible_label, overwrite=out.overwrite) as writer:
        total = reader.expected_frames
        if total is not None and video.frame_range:
            total = max(0, min(total, stop if stop is not None else total) - first)

        swapped_tracks: list = [None, None]  # the track swapped at the first and the last frame with one face

        def analysed() -> Iterator[list[tuple[np.ndarray, list[FaceJob], int]]]:
            """Batches of (frame, faces to swap, bridged count): decode, detect, track."""
            index = -1
            # The first batch is small, so swapping starts while the pipeline fills (same output).
            size = min(video.batch, FIRST_BATCH)
            while stop is None or index + 1 < stop:
                frames: list[tuple[int, np.ndarray]] = []
                while len(frames) < size and (stop is None or index + 1 < stop):
                    with clock("decode"):
                        frame = reader.read()
                    if frame is None:
                        break
                    index += 1
                    if index >= first:
                        frames.append((index, frame))
                if not frames:
                    if frame is None:
                        return
                    continue
                size = video.batch
                batch = []
                if finder is None:
                    found_all = swapper.detect_many([f for _, f in frames])
                else:
                    with clock("detect"):
                        found_all = [finder.find(f) for _, f in frames]
                for (i, frame), found in zip(frames, found_all):
                    t = float(i / fps)  # frames come without pts; VFR is spaced at the average rate
                    faces, _ = size_filter(found, select.faces, select.min_size, select.min_share, frame.shape)
                    with clock("track"):
                        tracked = tracker.update(
                            faces, t,
                            embed=lambda f, img=frame: swapper.embed(img, f),
                            landmarks=lambda f, img=frame: swapper.landmarks(img, f),
                        )
                    if len(tracked) == 1:  # who is swapped at the ends (a --device split matches them)
                        swapped_tracks[0] = swapped_tracks[0] or tracked[0].track
                        swapped_tracks[1] = tracked[0].track
                    jobs = [FaceJob(item.face, sources[item.track.assigned or 0] if many else sources[0],
                                    item.track.mask_params_at(t)) for item in tracked]
                    batch.append((frame, jobs, sum(int(item.bridged) for item in tracked)))
                yield batch
                if frame is None:
                    return

        # The next batch is analysed in a thread while this one is swapped, blended and encoded.
        with swapper.streaming(), Prefetch(analysed(), depth=1, name="swapcli-analyse") as batches:
            for batch in batches:
                swapper.swap_frames([(frame, jobs) for frame, jobs, _ in batch])
                for frame, jobs, bridged in batch:
                    result.faces_per_frame.append(len(jobs))
                    result.frames_swapped += int(bool(jobs))
                    result.bridged += bridged
                    with clock("encode"):
                        writer.write(frame, handed_over=True)  # the batch is dropped once written
                    if progress is not None:
                        progress(len(result.faces_per_frame), total)
        result.frames_read = reader.frames_read
    result.frames_written = writer.frames_written
    result.notes = list(writer.notes)
    if total and not video.frame_range and result.frames_read < total - 1:  # decoding stopped early: a cut or damaged file
        result.notes.append(f"{target}: decoding ended after {result.frames_read} of {total} frames "
                            "(truncated or damaged file?); the output stops there too")
    result.seconds = time.perf_counter() - started
    result.tracks = tracker.summary()
    result.identities = [None if tr is None or tr.embedding is None else [float(v) for v in tr.embedding]
                         for tr in swapped_tracks]
    result.detection = {"every": every, **(finder.stats.to_json() if finder else {"full": result.frames_read})}
    return result
