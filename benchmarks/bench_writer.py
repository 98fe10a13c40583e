"""VideoWriter throughput alone: frames/s at a given size, marking on vs off, per x264 preset.

Synthetic frames: a packaged photo (insightface's data/images/t1.jpg) resized a bit
larger than the frame, and a frame-sized window panning across it (so the
watermark's motion tracking and the encoder see real motion). Frames are made
before timing; the timed part is VideoWriter construction -> write() x N -> close(),
with the caller doing nothing else (the writer is the only work).

Also times the marker alone on this thread (``FrameMarker`` per frame, the work
that has to be spread over cores) as wall ms and CPU ms per frame.

    python benchmarks/bench_writer.py [--resolution 1080p] [--frames 300]
        [--presets veryfast,ultrafast] [--codec libx264] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}


def photo() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec and spec.submodule_search_locations, "insightface is not installed"
    return Path(list(spec.submodule_search_locations)[0], "data", "images", "t1.jpg")


def make_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    """``count`` distinct frames: a window panning 3.7 px right and 1.3 px down per frame (wraps)."""
    img = cv2.imread(str(photo()))
    big = cv2.resize(img, (width + 400, height + 200), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(count):
        x, y = int(i * 3.7) % 400, int(i * 1.3) % 200
        frames.append(np.ascontiguousarray(big[y:y + height, x:x + width]))
    return frames


def time_marker(frames: list[np.ndarray], label: str | None = None) -> dict[str, float]:
    from swapcli.mark import FrameMarker

    h, w = frames[0].shape[:2]
    marker = FrameMarker(h, w, watermark=True, visible_label=label, video=True)
    for f in frames[:5]:
        marker(f)
    t0, c0 = time.perf_counter(), time.process_time()
    for f in frames:
        marker(f)
    n = len(frames)
    return {"wall_ms": round((time.perf_counter() - t0) / n * 1e3, 2),
            "cpu_ms": round((time.process_time() - c0) / n * 1e3, 2)}


def time_writer(frames: list[np.ndarray], *, mark: bool, preset: str, codec: str, folder: Path) -> dict[str, float]:
    from swapcli.write.video import VideoWriter

    h, w = frames[0].shape[:2]
    out = folder / f"bench-{preset}-{int(mark)}.mp4"
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with VideoWriter(out, w, h, 25, codec=codec, preset=preset, mark=mark) as writer:
        for f in frames:
            writer.write(f)
    seconds = time.perf_counter() - t0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = len(frames)
    py_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    ff_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    result = {"fps": round(n / seconds, 1), "seconds": round(seconds, 3),
              "python_cpu_ms_per_frame": round(py_cpu / n * 1e3, 2),
              "ffmpeg_cpu_ms_per_frame": round(ff_cpu / n * 1e3, 2),
              "codec": writer.codec, "mb": round(out.stat().st_size / 1e6, 2)}
    out.unlink()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", default="1080p", choices=sorted(SIZES))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--presets", default="veryfast,ultrafast")
    ap.add_argument("--codec", default="libx264", help="libx264, h264_nvenc, ... or auto")
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting; the best is kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from swapcli.write import video as wv

    w, h = SIZES[args.resolution]
    frames = make_frames(w, h, args.frames)
    report: dict[str, object] = {
        "resolution": f"{w}x{h}", "frames": len(frames), "cores": os.cpu_count(),
        "cv2_threads": cv2.getNumThreads(),
        "mark_workers": getattr(wv, "mark_workers", lambda: None)(),
        "marker_this_thread": time_marker(frames[:120]),
        "writer": {},
    }
    with tempfile.TemporaryDirectory(prefix="swapcli-bench-") as tmp:
        for preset in args.presets.split(","):
            for mark in (False, True):
                runs = [time_writer(frames, mark=mark, preset=preset, codec=args.codec, folder=Path(tmp))
                        for _ in range(args.repeat)]
                best = max(runs, key=lambda r: r["fps"])
                report["writer"][f"{preset} mark={'on' if mark else 'off'}"] = best  # type: ignore[index]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['resolution']}, {report['frames']} frames, {report['cores']} cores, "
          f"cv2 threads {report['cv2_threads']}, marking workers {report['mark_workers']}")
    m = report["marker_this_thread"]
    print(f"marker alone on one thread: {m['wall_ms']} ms/frame wall, {m['cpu_ms']} ms/frame CPU")  # type: ignore[index]
    print(f"{'setting':<24}{'fps':>8}{'py cpu ms/f':>13}{'ffmpeg cpu ms/f':>17}{'MB':>8}")
    for key, r in report["writer"].items():  # type: ignore[union-attr]
        print(f"{key:<24}{r['fps']:>8}{r['python_cpu_ms_per_frame']:>13}{r['ffmpeg_cpu_ms_per_frame']:>17}"
              f"{r['mb']:>8}")


if __name__ == "__main__":
    sys.exit(main())
