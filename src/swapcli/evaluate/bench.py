"""`swapcli bench`: the real video pipeline (swap_video) on a clip generated from the
packaged photos, timed per stage and set against a plain ffmpeg transcode of the same clip.

What is measured, and how:

* per-stage times: a nesting-aware clock replaces the Swapper's, so each stage's
  time excludes stages called inside it (the tracker calls embed and landmarks).
  The pipeline analyses the next batch (decode, detect, track) in a second
  thread while it swaps this one, so stage times are busy times that can sum
  to more than the wall time: `overlapped_ms` is by how much;
  `decode` and `encode` are the time the pipeline waited on the ffmpeg decoder
  for a frame / spent handing a frame to the encoder (its queue is full when the
  encoder is the bottleneck); `other` is the rest of the wall time.
* ffmpeg's own work: CPU time (user + system) of the decoder and encoder
  children, sampled with psutil while they run (the last <= 50 ms are missed).
* peak RSS: this process (max of psutil samples and getrusage) and each ffmpeg
  child (psutil samples every 50 ms).
* GPU: `nvidia-smi --query-gpu` sampled every 200 ms while the pipeline runs,
  only when a model session runs on the CUDA provider (else null).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from swapcli.core.errors import UsageError
from swapcli.core.options import EngineOptions, OutputOptions, SelectOptions, Timings
from swapcli.core.timing import Clock
from swapcli.write.video import resolve_codec

STAGE_ORDER = ("decode", "detect", "track", "landmarks", "embed", "swap", "enhance", "blend", "encode")


@dataclass(frozen=True)
class BenchOptions:
    resolution: str = "720p"
    frames: int = 100
    faces: int = 1
    fps: int = 25
    codec: str = "auto"  # h264_nvenc where an NVIDIA GPU can encode, else libx264 (write.video.resolve_codec)
    preset: str = "veryfast"
    crf: int = 18
    batch: int = 8  # frames per model call (VideoOptions.batch)


class ExclusiveClock(Clock):
    """A Clock whose stages exclude the time of stages nested inside them (per thread). It also
    keeps each stage's CPU time on its own thread (`cpu`): wall time on 2 busy cores counts the
    waits for a core and for the GIL, CPU time does not."""

    def __init__(self, timings: Timings | None = None, timer: Callable[[], float] = time.perf_counter,
                 cpu_timer: Callable[[], float] = time.thread_time) -> None:
        super().__init__(timings)
        self.cpu = Timings()
        self._local = threading.local()
        self._timer = timer
        self._cpu_timer = cpu_timer

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        inner = self._local.__dict__.setdefault("inner", [])
        start, cpu_start = self._timer(), self._cpu_timer()
        inner.append([0.0, 0.0])
        try:
            yield
        finally:
            elapsed, cpu = self._timer() - start, self._cpu_timer() - cpu_start
            nested, cpu_nested = inner.pop()
            self.timings.add(stage, elapsed - nested)
            self.cpu.add(stage, cpu - cpu_nested)
            if inner:
                inner[-1][0] += elapsed
                inner[-1][1] += cpu


class ProcessMonitor:
    """Samples RSS of this process and RSS + CPU time of its ffmpeg children in a thread (the
    list of children is refreshed every RELIST_S: the ffmpeg processes live for the whole run)."""

    RELIST_S = 0.5

    def __init__(self, interval: float = 0.05, pids: tuple[int, ...] = ()) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.me = psutil.Process()
        self.watch = [psutil.Process(p) for p in pids]
        self.peak_self = 0
        self.children: dict[int, dict] = {}  # pid -> {"role", "peak_rss", "cpu_s"}
        self._kids: list = []
        self._listed = -float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swapcli-bench-monitor", daemon=True)

    @staticmethod
    def role(cmdline: list[str]) -> str:
        if "pipe:1" in cmdline:
            return "decode"
        if "pipe:0" in cmdline:
            return "encode"
        return "other"

    def sample(self) -> None:
        psutil = self._psutil
        with contextlib.suppress(psutil.Error):
            self.peak_self = max(self.peak_self, self.me.memory_info().rss)
        now = time.monotonic()
        if now - self._listed >= self.RELIST_S:  # listing children scans /proc: ~1 ms, too dear 20 times a second
            self._listed = now
            try:
                self._kids = self.me.children(recursive=True) + self.watch
            except psutil.Error:
                self._kids = list(self.watch)
        for child in self._kids:
            try:
                entry = self.children.get(child.pid)
                if entry is None:
                    cmd = child.cmdline()
                    if not cmd or "ffmpeg" not in os.path.basename(cmd[0]).lower():
                        continue
                    entry = self.children[child.pid] = {"role": self.role(cmd), "peak_rss": 0, "cpu_s": 0.0}
                with child.oneshot():
                    rss = child.memory_info().rss
                    cpu = child.cpu_times()
                entry["peak_rss"] = max(entry["peak_rss"], rss)
                entry["cpu_s"] = max(entry["cpu_s"], cpu.user + cpu.system)
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessMonitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def by_role(self, role: str) -> tuple[int, float]:
        """(peak RSS bytes, CPU seconds) summed over this role's children (usually one)."""
        entries = [e for e in self.children.values() if e["role"] == role]
        return max((e["peak_rss"] for e in entries), default=0), sum(e["cpu_s"] for e in entries)


class GpuMonitor:
    """`nvidia-smi` sampling GPU utilisation and memory every 200 ms (NVIDIA GPU 0)."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.memory: list[float] = []
        self.proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMonitor:
        exe = shutil.which("nvidia-smi")
        if exe:
            self.proc = subprocess.Popen([exe, "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-i", "0", "-lms", "200"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                         start_new_session=True)
            self._thread = threading.Thread(target=self._read, name="swapcli-bench-gpu", daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            with contextlib.suppress(ValueError, IndexError):
                self.util.append(float(parts[0]))
                self.memory.append(float(parts[1]))

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
        if self._thread is not None:
            self._thread.join(5)

    def result(self) -> dict | None:
        if not self.util:
            return None
        return {"util_mean_pct": round(statistics.fmean(self.util), 1), "util_max_pct": max(self.util),
                "memory_max_mb": max(self.memory), "samples": len(self.util)}


def _providers(swapper) -> list[str]:
    found: list[str] = []
    for model in getattr(swapper.analyser, "_models", {}).values():
        session = getattr(model, "session", None)
        if session is not None:
            for p in session.get_providers():
                if p not in found:
                    found.append(p)
    return found


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    import onnxruntime

    from swapcli.core import ffmpeg as ff

    v = ff.version()
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(terse=True),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "ffmpeg": ".".join(map(str, v)) if v else None}


def _mb(n: int | float) -> float:
    return round(n / 2 ** 20, 1)


def _peak_rss_self() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def plain_transcode(clip: Path, out: Path, bench: BenchOptions) -> tuple[float, int, float]:
    """A plain ffmpeg decode + encode of the clip with the same codec, preset and CRF:
    (seconds, peak RSS bytes, CPU seconds)."""
    from swapcli.core import ffmpeg as ff
    from swapcli.write.video import encoder_options

    codec = resolve_codec(bench.codec)
    rate = [arg for key, value in encoder_options(codec, bench.crf, bench.preset).items()
            for arg in (f"-{key}", str(value))]
    cmd = [*ff.base_cmd("error"), "-y", "-i", ff.media_path(clip), "-map", "0:v:0", "-c:v", codec, *rate,
           "-pix_fmt", "yuv420p", "-an", ff.media_path(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    with ProcessMonitor(pids=(proc.pid,)) as monitor:
        _, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise UsageError(f"plain ffmpeg transcode failed: {ff.last_error_line(err.decode('utf-8', 'replace'))}")
    entry = monitor.children.get(proc.pid, {"peak_rss": 0, "cpu_s": 0.0})
    return seconds, entry["peak_rss"], entry["cpu_s"]


def run_bench(options: EngineOptions, bench: BenchOptions,
              progress: Callable[[int, int | None], None] | None = None,
              status: Callable[[str], None] | None = None) -> dict:
    import psutil

    from swapcli.evaluate.samples import (
        BENCH_SOURCE,
        RESOLUTIONS,
        make_clip,
        photo_path,
        poster,
    )
    from swapcli.pipeline.swapper import Swapper
    from swapcli.pipeline.video import VideoOptions, swap_video
    from swapcli.swap.engines import engine_device

    say = status or (lambda msg: None)
    if bench.resolution not in RESOLUTIONS:
        raise UsageError(f"--resolution must be one of {', '.join(RESOLUTIONS)}, not '{bench.resolution}'")
    if bench.faces not in (1, 2, 4):
        raise UsageError(f"--faces must be 1, 2 or 4, not {bench.faces}")
    if bench.frames < 3:
        raise UsageError(f"--frames must be at least 3, not {bench.frames}")
    began = time.perf_counter()
    startup = max(0.0, time.time() - psutil.Process().create_time())  # interpreter start + imports
    size = RESOLUTIONS[bench.resolution]

    swapper = Swapper(dataclasses.replace(options, stream=True))  # as `swapcli video` runs
    source_photo = photo_path(BENCH_SOURCE)
    with tempfile.TemporaryDirectory(prefix="swapcli-bench-") as tmp:
        say("making the clip")
        picture = poster(swapper.analyser, bench.faces, size)
        face_px = [round(f.size) for f in swapper.analyser.detect(picture)]
        clip = make_clip(Path(tmp) / "clip.mp4", picture, size, bench.frames, fps=bench.fps)
        del picture
        say("plain ffmpeg transcode")
        plain_s, plain_rss, plain_cpu = plain_transcode(clip, Path(tmp) / "plain.mp4", bench)

        say("loading models")
        t0 = time.perf_counter()
        swapper.clock = Clock()
        sources = swapper.load_sources([source_photo])
        swapper.embed(sources[0].image, sources[0].face)  # load the embedder now, not inside the timed loop
        setup = time.perf_counter() - t0

        clock = ExclusiveClock()
        swapper.clock = clock
        providers = _providers(swapper)
        select = SelectOptions(faces="all" if bench.faces > 1 else "largest")
        video = VideoOptions(crf=bench.crf, preset=bench.preset, codec=bench.codec, batch=bench.batch)
        on_gpu = "CUDAExecutionProvider" in providers or engine_device(swapper.engine, options.device) is not None
        gpu = GpuMonitor() if on_gpu else contextlib.nullcontext()
        say("swapping")
        own = psutil.Process()
        cpu0 = sum(own.cpu_times()[:2])
        with ProcessMonitor() as monitor, gpu:
            result = swap_video(swapper, [sources], clip, Path(tmp) / "swapped.mp4", select, video,
                                OutputOptions(overwrite=True), inputs=[source_photo], progress=progress)
        seconds = result.seconds
        cpu_self = sum(own.cpu_times()[:2]) - cpu0  # user + system of swapcli's threads, not its children
    frames = result.frames_written
    stages = clock.timings.ms
    ordered = [s for s in STAGE_ORDER if s in stages] + sorted(s for s in stages if s not in STAGE_ORDER)
    stage_ms = {s: round(stages[s], 1) for s in ordered}
    busy = sum(stages.values())
    stage_ms["other"] = round(max(0.0, seconds * 1000 - busy), 1)
    overlapped = round(max(0.0, busy - seconds * 1000), 1)  # analysis thread ran beside the swap thread
    dec_rss, dec_cpu = monitor.by_role("decode")
    enc_rss, enc_cpu = monitor.by_role("encode")
    summary = result.to_json()

    def per(ms: float) -> float:
        return round(ms / max(frames, 1), 2)

    end_to_end = startup + setup + seconds
    return {
        "ok": True,
        "engine": swapper.engine.name,
        "device": "cuda" if on_gpu else "cpu",
        "batch": bench.batch,
        "paste": "torch " + str(swapper.compositor.device) if swapper.compositor is not None else "cv2 (host)",
        "device_requested": options.device,
        "providers": providers,
        "det_size": options.det_size,
        "clip": {"resolution": bench.resolution, "width": size[0], "height": size[1], "fps": bench.fps,
                 "frames": bench.frames, "faces": bench.faces, "face_px": face_px, "codec": resolve_codec(bench.codec),
                 "preset": bench.preset, "crf": bench.crf, "source": BENCH_SOURCE},
        "frames_written": frames,
        "frames_swapped": result.frames_swapped,
        "faces_swapped": summary["faces_swapped"]["total"],
        "startup_s": round(startup, 3),
        "setup_s": round(setup, 3),
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds else None,
        "fps_end_to_end": round(frames / end_to_end, 2) if end_to_end else None,
        "plain_ffmpeg": {"seconds": round(plain_s, 3), "fps": round(frames / plain_s, 1) if plain_s else None,
                         "cpu_s": round(plain_cpu, 2), "peak_rss_mb": _mb(plain_rss)},
        "ratio": round(seconds / plain_s, 2) if plain_s else None,
        "ratio_end_to_end": round(end_to_end / plain_s, 2) if plain_s else None,
        "stages_ms": stage_ms,
        "overlapped_ms": overlapped,
        "stages_ms_per_frame": {k: per(v) for k, v in stage_ms.items()},
        "stages_cpu_ms_per_frame": {s: per(clock.cpu.ms[s]) for s in ordered if s in clock.cpu.ms},
        "cpu_ms_per_frame": per(cpu_self * 1000),
        "ffmpeg_cpu_ms_per_frame": {"decode": per(dec_cpu * 1000), "encode": per(enc_cpu * 1000)},
        "peak_rss_mb": {"swapcli": _mb(max(monitor.peak_self, _peak_rss_self())),
                        "ffmpeg_decode": _mb(dec_rss), "ffmpeg_encode": _mb(enc_rss)},
        "gpu": gpu.result() if isinstance(gpu, GpuMonitor) else None,
        "machine": machine(),
        "bench_s": round(time.perf_counter() - began, 2),
    }
