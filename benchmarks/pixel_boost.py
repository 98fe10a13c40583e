"""Time per face added by --pixel-boost on this machine's CPU (not a test: run it by hand).

    .venv/bin/python benchmarks/pixel_boost.py [REPEATS]

Two stand-ins with inswapper's exact interface: the identity graph (costs nothing, so its
times are pixel boost's own work: the larger warp, split, merge and paste-back, plus the
ONNX call overhead) and a convolutional one with a generator's amount of work
(standins.compute_generator, ~9 GMAC per 128-px sample), whose cost grows with k².
Prints the median ms per face of the engine's swap (align, generate, interleave) and of
the cv2 paste-back, for each boost, and the round-trip PSNR of the identity stand-in.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the stand-ins live with the tests

import standins  # noqa: E402
from conftest import PHOTOS  # noqa: E402


def _engine(path: Path, embedder: Path, boost: int):
    from swapcli.analyse.embedders import OnnxArcFace
    from swapcli.swap.onnx_family import GeneratorConfig, OnnxGenerator

    engine = OnnxGenerator(GeneratorConfig("inswapper", "arcface_128", 128, "unit"), path,
                           OnnxArcFace(embedder, "cpu"), device="cpu")
    engine.set_pixel_boost(boost)
    return engine


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm up (session arenas, lazy imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(repeats: int = 7) -> None:
    from swapcli.pipeline.swapper import Swapper
    from swapcli.swap.crop import paste_back

    d = Path(tempfile.mkdtemp(prefix="pixel_boost_bench_"))
    embedder = standins.embedder(d / "embedder.onnx")
    graphs = {"identity": standins.generator(d / "identity.onnx", 128),
              "compute": standins.compute_generator(d / "compute.onnx", 128)}
    swapper = Swapper()
    sources = swapper.load_sources([PHOTOS["gdp"]])
    small = cv2.imread(str(PHOTOS["yaoming"]))
    photos = {"105-px face": small, "315-px face": cv2.resize(small, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)}
    faces = {}
    for name, image in photos.items():
        face = max(swapper.detect(image), key=lambda f: f.area)
        swapper.landmarks(image, face)
        faces[name] = face
    for graph, path in graphs.items():
        for photo, image in photos.items():
            base = None
            for boost in (128, 256, 384, 512):
                engine = _engine(path, embedder, boost)
                engine.latent(sources)
                face = faces[photo]
                reps = repeats if graph == "identity" else max(2, repeats // 3)
                swap_ms = _median_ms(lambda: engine.swap(image, face, sources), reps)
                result = engine.swap(image, face, sources)
                fresh = lambda: type(result)(roi=result.roi, image=None, crop=result.crop, matrix=result.matrix)  # noqa: E731
                paste_ms = _median_ms(lambda: paste_back(fresh(), image.shape), reps)
                total = swap_ms + paste_ms
                base = total if base is None else base
                line = (f"{graph:8s} {photo}  boost {boost}: swap {swap_ms:7.1f} ms + paste {paste_ms:5.1f} ms"
                        f" = {total:7.1f} ms/face (+{total - base:6.1f} ms)")
                if graph == "identity":
                    swapper.engine = engine
                    frame = image.copy()
                    swapper.swap_face(frame, face, sources)
                    mask = np.zeros(image.shape[:2], np.uint8)
                    cv2.fillConvexPoly(mask, cv2.convexHull(face.landmarks.astype(np.int32)), 1)
                    line += f"  round trip {standins.psnr(frame, image, mask):.2f} dB"
                print(line, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
