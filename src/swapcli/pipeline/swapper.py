"""Models loaded once, and the per-face work every command shares:
analyse -> swap -> blend. Image, video and batch all go through here."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from swapcli.analyse.face import Face
from swapcli.analyse.insight import AnalyserOptions, InsightAnalyser
from swapcli.blend.ghost_mask import MaskParams, params_for
from swapcli.blend.masks import FaceMask, Masker
from swapcli.blend.paste import BlendInfo, blend, generated_landmarks
from swapcli.core.errors import NoFaceError
from swapcli.core.options import EngineOptions
from swapcli.core.timing import Clock
from swapcli.read.image import read_image
from swapcli.swap.base import SourceFace, SwapResult, swap_batch
from swapcli.swap.crop import paste_back, roi_of
from swapcli.swap.engines import create_compositor, create_engine, create_restorer

log = logging.getLogger("swapcli")


@dataclass
class FaceJob:
    """One face to swap in a frame, with its sources and (video) its track's mask rule."""

    face: Face
    sources: Sequence[SourceFace]
    params: Callable[[float], MaskParams] | None = None


@dataclass
class FaceReport:
    face: Face
    blend: BlendInfo
    info: dict

    def to_json(self) -> dict:
        return {**self.face.to_json(), "mask": self.blend.to_json(), **self.info}


RETRY_DET_SIZES = (320, 160)  # tried, in this order, below the configured size when a photo shows no face


@dataclass(frozen=True)
class FoundBy:
    """How a photo's faces were found when the configured detector size found none: a face that
    fills the frame (a tight crop) is too big for SCRFD's largest anchors at 640 px and is found
    once the picture is detected smaller. Reported so the user can pass --det-size next time."""

    path: str
    role: str  # source | reference | target
    det_size: int  # the size that found it
    configured: int  # the --det-size that did not
    ms: float  # what the retries cost

    def to_json(self) -> dict:
        return {"input": self.path, "role": self.role, "det_size": self.det_size,
                "configured_det_size": self.configured, "retry_ms": round(self.ms, 1)}


@dataclass
class Found:
    faces: list[Face]
    retry_size: int | None = None  # the smaller detector size that found them (None: the configured one)
    retry_ms: float = 0.0  # time spent on retries (0 when the configured size found a face)


def find_faces(analyser: InsightAnalyser, image: np.ndarray, det_size: int) -> Found:
    """Faces of a photo, retried at smaller detector sizes only when none is found: a hit costs
    nothing extra, a miss one or two small detector runs."""
    import time

    faces = analyser.detect(image)
    if faces:
        return Found(faces)
    start = time.perf_counter()
    for size in retry_sizes(det_size):
        faces = analyser.detect(image, size)
        if faces:
            return Found(faces, size, (time.perf_counter() - start) * 1000)
    return Found([], None, (time.perf_counter() - start) * 1000)


def retry_sizes(det_size: int) -> list[int]:
    return [s for s in RETRY_DET_SIZES if s < det_size]


class InOrder:
    """Lets frames swapped on several threads call their tracks' mask rules in frame order: frame
    i's first call waits until frame i-1 has made its last one (or has ended, whatever happened).
    Frames are numbered and started in order, so no frame ever waits for a later one. Only the
    frames not yet done below the newest keep an event."""

    def __init__(self) -> None:
        self._events: dict[int, threading.Event] = {}
        self._finished: set[int] = set()
        self._low = 0  # every frame below this one is done
        self._lock = threading.Lock()
        self._next = 0

    def number(self) -> int:
        """The next frame's number (call in frame order, on one thread)."""
        i, self._next = self._next, self._next + 1
        return i

    def wait(self, i: int) -> None:
        with self._lock:
            if i < self._low or i in self._finished:  # the first frame's "previous" is -1: done
                return
            event = self._events.setdefault(i, threading.Event())
        event.wait()

    def done(self, i: int) -> None:
        with self._lock:
            if i < self._low or i in self._finished:
                return
            self._finished.add(i)
            event = self._events.pop(i, None)
            while self._low in self._finished:
                self._finished.discard(self._low)
                self._low += 1
        if event is not None:
            event.set()

    def gate(self, i: int, last: bool, params: Callable[[float], MaskParams] | None) -> Callable[[float], MaskParams]:
        rule = params or params_for

        def ordered(offset: float) -> MaskParams:
            self.wait(i - 1)
            try:
                return rule(offset)
            finally:
                if last:
                    self.done(i)

        return ordered


def frame_workers(threads: int = 0) -> int:
    """Threads that swap frames at once with a host engine: `threads` if set, else one per core,
    at most 4 (measured on 2 cores only: 2 threads beat 3 there)."""
    from swapcli.pipeline.executor import cpu_count

    return max(1, threads) if threads else min(4, cpu_count())


class Swapper:
    def __init__(self, options: EngineOptions | None = None, clock: Clock | None = None) -> None:
        self.options = options or EngineOptions()
        self.analyser = InsightAnalyser(
            AnalyserOptions(device=self.options.device, weights_dir=self.options.weights_dir,
                            threads=self.options.session_threads, det_size=self.options.det_size)
        )
        self.engine = create_engine(self.options)
        self.restorer = create_restorer(self.options)
        self.clock = clock or Clock()
        self.compositor = create_compositor(self.options, self.engine, self.restorer)
        o = self.options
        self.masker = Masker(o.mask_plan(), o.device, o.session_threads, o.weights_dir)  # same device as the engine
        self._pose_warned = False
        self._pool = None  # frame threads of a host engine while streaming()
        self._order: InOrder | None = None  # ... and the frame order their mask rules keep
        self.found_by: dict[str, FoundBy] = {}  # photos whose faces only a smaller detector size found


    def set_masks(self, **changes) -> None:
        """Change mask options between frames (swapcli live's m key): the masker is rebuilt."""
        import dataclasses

        self.options = dataclasses.replace(self.options, **changes)
        o = self.options
        self.masker = Masker(o.mask_plan(), o.device, o.session_threads, o.weights_dir)
    def detect(self, image: np.ndarray) -> list[Face]:
        with self.clock("detect"):
            return self.analyser.detect(image)

    def detect_many(self, images: list[np.ndarray]) -> list[list[Face]]:
        with self.clock("detect"):
            return self.analyser.detect_many(images)

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray:
        with self.clock("landmarks"):
            return self.analyser.landmarks(image, face)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        with self.clock("embed"):
            return self.analyser.embed(image, face)

    def find_faces(self, image: np.ndarray, path: Path, what: str) -> list[Face]:
        """Faces of a photo (source, reference, image target), with the smaller-detector retry;
        raises NoFaceError when no size finds one. Not for video frames: a retry per frame
        without faces would slow every faceless stretch."""
        with self.clock("detect"):
            found = find_faces(self.analyser, image, self.options.det_size)
        if not found.faces:
            tried = retry_sizes(self.options.det_size)
            also = f" (also tried detector sizes {', '.join(map(str, tried))})" if tried else ""
            raise NoFaceError(f"{path}: no face found in the {what} image{also}")
        if found.retry_size is not None:
            by = FoundBy(str(path), what, found.retry_size, self.options.det_size, found.retry_ms)
            self.found_by[by.path] = by
            log.info("%s: no face at detector size %d; found at %d (a face filling the frame; "
                     "--det-size %d skips the retry)", path, by.configured, by.det_size, by.det_size)
        return found.faces

    def main_face(self, path: Path, what: str) -> tuple[np.ndarray, Face]:
        """The largest face of a photo (sources and references), fully analysed."""
        with self.clock("read"):
            loaded = read_image(path)
        faces = self.find_faces(loaded.bgr, path, what)
        face = max(faces, key=lambda f: f.area)
        self.landmarks(loaded.bgr, face)
        return loaded.bgr, face

    def load_sources(self, paths: Sequence[Path]) -> list[SourceFace]:
        sources = []
        for path in paths:
            image, face = self.main_face(Path(path), "source")
            if self.engine.uses_embedding:
                self.embed(image, face)
            source = SourceFace(image=image, face=face, path=Path(path))
            prepare = getattr(self.engine, "prepare", None)
            if prepare is not None:  # what the engine derives from a source, once, before any frame
                with self.clock("swap"):
                    prepare(source)
            sources.append(source)
        return sources

    def reference_embedding(self, path: Path) -> np.ndarray:
        image, face = self.main_face(Path(path), "reference")
        return self.embed(image, face)

    def swap_face(
        self,
        frame: np.ndarray,
        face: Face,
        sources: Sequence[SourceFace],
        params: Callable[[float], MaskParams] | None = None,
    ) -> FaceReport:
        """Swap one face in place; `params` maps outline offset to mask (video tracks smooth it)."""
        return self.swap_faces(frame, [face], sources, params)[0]

    def swap_faces(
        self,
        frame: np.ndarray,
        faces: Sequence[Face],
        sources: Sequence[SourceFace],
        params: Callable[[float], MaskParams] | None = None,
    ) -> list[FaceReport]:
        """Swap several faces of one frame in place (see swap_frames)."""
        return self.swap_frames([(frame, [FaceJob(face, sources, params) for face in faces])])[0]

    def swap_frames(self, frames: Sequence[tuple[np.ndarray, Sequence[FaceJob]]]) -> list[list[FaceReport]]:
        """Swap the faces of a batch of frames, in place, with as few model calls as possible.

        Every face is generated from its untouched frame first (crop engines batch all of them
        into one generator call), then restored, measured and blended, frame by frame. The
        output equals swapping frame by frame: a batch only changes how work is grouped.
        An engine that works on the host (the embedded one: numpy and OpenCV, which release the
        GIL) has no model call to batch: inside `streaming()` its frames are swapped on threads.
        A track's mask rule (FaceJob.params) keeps state that each blend feeds in turn, so those
        calls still happen in frame order (see InOrder); everything else overlaps.
        """
        if self._pool is None or len(frames) <= 1:
            return self._swap_frames(frames)
        return [future.result() for future in self._submit_frames(frames)]

    def _submit_frames(self, frames: Sequence[tuple[np.ndarray, Sequence[FaceJob]]]) -> list:
        """Start swapping these frames on the frame threads, after every frame submitted before
        (their mask rules keep that order); one Future of reports a frame."""
        assert self._pool is not None and self._order is not None
        order = self._order

        def one(i: int, frame: np.ndarray, jobs: Sequence[FaceJob]) -> list[FaceReport]:
            try:
                gated = [FaceJob(job.face, job.sources, order.gate(i, k == len(jobs) - 1, job.params))
                         for k, job in enumerate(jobs)]
                return self._swap_frames([(frame, gated)])[0]
            finally:  # a frame is done once the frames before it are (one without faces too)
                order.wait(i - 1)
                order.done(i)

        return [self._pool.submit(one, order.number(), frame, jobs) for frame, jobs in frames]

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Many frames follow (video): with a host engine and `stream` set, swap_frames runs them on
        `frame_workers` threads, and OpenCV's own threading is off meanwhile (the frames already
        keep the cores busy)."""
        workers = frame_workers(self.options.threads)
        if (self._pool is not None or not self.options.stream or not getattr(self.engine, "host_only", False)
                or self.restorer is not None or self.compositor is not None or workers < 2):
            yield
            return
        import cv2
        from concurrent.futures import ThreadPoolExecutor

        before = cv2.getNumThreads()
        cv2.setNumThreads(1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="swapcli-swap")
        self._order = InOrder()
        try:
            yield
        finally:
            pool, self._pool, self._order = self._pool, None, None
            pool.shutdown(wait=True, cancel_futures=True)
            cv2.setNumThreads(before)

    def _swap_frames(self, frames: Sequence[tuple[np.ndarray, Sequence[FaceJob]]]) -> list[list[FaceReport]]:
        pairs = [(frame, job.face) for frame, jobs in frames for job in jobs if job.face.landmarks is None]
        if pairs:
            with self.clock("landmarks"):
                self.analyser.landmarks_many(pairs)
        items = [(frame, job.face, job.sources) for frame, jobs in frames for job in jobs]
        if not items:
            return [[] for _ in frames]
        with self.clock("swap"):
            results = swap_batch(self.engine, items)
        self._warn_pose(results)
        if self.restorer is not None:
            with self.clock("enhance"):
                for result, (_, face, _) in zip(results, items):
                    self.restorer.apply(result, face)
        with self.clock("landmarks"):
            generated = generated_landmarks(results, [face for _, face, _ in items], self.analyser)
        if self.compositor is None:
            with self.clock("blend"):
                for result, (frame, _, _) in zip(results, items):
                    paste_back(result, frame.shape)
        # Each face's masks (--mask), judged on the untouched frames (before any face is pasted);
        # their models run once for the faces of every frame in the batch.
        masks = self.masker.compute([(frame, face, self._roi(result, frame.shape))
                                     for result, (frame, face, _) in zip(results, items)], self.clock)
        if not self.masker.plan.default:  # --json says which masks (and models) were applied
            for result in results:
                result.info["masks"] = self.masker.names
        reports: list[list[FaceReport]] = []
        k = 0
        with self.clock("blend"):
            for frame, jobs in frames:
                done = []
                on_device = self.compositor.upload(frame) if self.compositor is not None and jobs else None
                for job in jobs:
                    result, points, fm = results[k], generated[k], masks[k]
                    k += 1
                    if on_device is not None:
                        info = self._paste_on_device(on_device, job, result, points, fm)
                    else:
                        info = blend(frame, job.face, result, points, job.params, fm.covered, fm.visible, fm.ghost)
                    done.append(FaceReport(job.face, info, result.info))
                if on_device is not None:
                    frame[...] = self.compositor.download(on_device)
                reports.append(done)
        return reports

    def _warn_pose(self, results: Sequence[SwapResult]) -> None:
        """One warning line per run when the source's head turn limits a result (see --json)."""
        for result in results:
            why = result.info.get("pose_limited")
            if why and not self._pose_warned:
                self._pose_warned = True
                log.warning("pose limits the result: %s", why)

    @staticmethod
    def _roi(result: SwapResult, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The frame box a result is pasted into (crop results on the device have not made theirs yet)."""
        if result.image is None and result.crop is not None:
            return roi_of(result.matrix, int(result.crop.shape[0]), shape)[0]
        return result.roi

    def _paste_on_device(self, frame_t, job: FaceJob, result: SwapResult, generated: np.ndarray,
                         fm: FaceMask | None = None) -> BlendInfo:
        fm = fm or FaceMask()
        shift = np.array(result.roi[:2], dtype=np.float32)
        offset, chosen = self.compositor.paste(frame_t, result.crop, result.matrix, job.face.landmarks,
                                               generated + shift, job.face.kps, job.params, fm.covered,
                                               fm.visible, fm.ghost)
        return BlendInfo(offset, chosen)
