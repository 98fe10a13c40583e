"""Offline occlusion estimate on clean and synthetically masked real faces:

    python benchmarks/masks/measure_occlusion.py [--sample N] [--json out.json]

Clean faces (the packaged photos and the corpora at /work/corpus/{dev,held} when present): the
fraction of the face's expected-skin area marked occluded (mean, 95th percentile, max). Masked
faces (insightface's mask_*.jpg warped over the nose and lower face as bench_masks.py does, on the
four contact-sheet cases and on every clean face with each texture): the fraction of the mask's
pixels inside the expected-skin area that are marked (found), and the fraction of the expected
skin outside the mask that is marked (false positives). Also ms per face of the estimate.
Detections are cached in /tmp (the analyser is slow on shared cores).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from bench_masks import MASK_PHOTOS, mask_on_face  # noqa: E402
from conftest import PHOTOS  # noqa: E402

CORPORA = [Path("/work/corpus/dev"), Path("/work/corpus/held")]
CACHE = Path("/tmp/occl_faces.pkl")
CASES = (("yaoming", "black"), ("gdp", "blue"), ("astronaut", "green"), ("t1", "white"))


def photo_list() -> list[tuple[str, Path]]:
    out = [(k, Path(v)) for k, v in PHOTOS.items()]
    for c in CORPORA:
        if c.is_dir():
            out += [(f"{c.name}/{p.stem}", p) for p in sorted(c.iterdir()) if p.suffix.lower() in (".jpg", ".png", ".jpeg")]
    return out


def analysed(analyser=None) -> dict:
    """name -> (path, [(bbox, score, kps, landmarks)]) of faces at least 15 px between the eyes."""
    if CACHE.exists():
        return pickle.loads(CACHE.read_bytes())
    if analyser is None:
        from swapcli.analyse.insight import InsightAnalyser
        analyser = InsightAnalyser()
    out = {}
    for name, path in photo_list():
        image = cv2.imread(str(path))
        if image is None:
            continue
        faces = []
        for f in analyser.detect(image):
            if np.linalg.norm(f.kps[0] - f.kps[1]) < 15:
                continue
            analyser.landmarks(image, f)
            faces.append((f.bbox, f.score, f.kps, f.landmarks))
        out[name] = (str(path), faces)
    CACHE.write_bytes(pickle.dumps(out))
    return out


def make_face(t):
    from swapcli.analyse.face import Face
    return Face(bbox=np.array(t[0]), score=t[1], kps=np.array(t[2]), landmarks=np.array(t[3]))


def expected_skin(face, roi) -> np.ndarray:
    """ROI-sized bool: the face's expected skin (as occlusion.py defines it, not eroded)."""
    from swapcli.analyse import mesh
    from swapcli.analyse.skin import face_pose
    from swapcli.blend.occlusion import EXPECT_SKIN
    from swapcli.core.raster import rasterise

    x0, y0, x1, y1 = roi
    pose = face_pose(face)
    verts = mesh.place(face.landmarks, pose) - (x0, y0)
    r = rasterise(verts, mesh.triangles(), (y1 - y0, x1 - x0), pose.depth(mesh.TEMPLATE))
    region = r.per_triangle(mesh.regions(), -1)
    return np.isin(region, EXPECT_SKIN) & (r.gather(pose.visibility()) > 0.2)


def occluded(image, face, roi) -> tuple[np.ndarray, float]:
    from swapcli.blend.occlusion import occlusion
    start = time.perf_counter()
    occ = occlusion(image, face, roi)
    ms = (time.perf_counter() - start) * 1000
    x0, y0, x1, y1 = roi
    return (np.zeros((y1 - y0, x1 - x0), bool) if occ is None else occ > 0.5), ms


def roi_of(face, shape):
    from swapcli.core.geometry import expand_box
    return expand_box(face.landmarks, 0.25, shape)


def clean(data, analyser=None) -> dict:
    rows, ms = [], []
    for name, (path, faces) in data.items():
        image = cv2.imread(path)
        for i, t in enumerate(faces):
            face = make_face(t)
            roi = roi_of(face, image.shape)
            occ, t_ms = occluded(image, face, roi)
            ms.append(t_ms)
            exp = expected_skin(face, roi)
            rows.append((f"{name}#{i}", float((occ & exp).sum() / max(1, exp.sum()))))
    f = np.array([r[1] for r in rows])
    return {"faces": len(rows), "mean": round(float(f.mean()), 4), "p95": round(float(np.percentile(f, 95)), 4),
            "max": round(float(f.max()), 4), "ms_median": round(float(np.median(ms)), 2),
            "worst": sorted(rows, key=lambda r: -r[1])[:8]}


def masked_one(image, t, texture, analyser) -> dict:
    face = make_face(t)
    img = mask_on_face(image, face, texture)
    # the mask's own pixels (same warp as mask_on_face)
    alpha = mask_on_face(np.zeros_like(image), face, np.full_like(texture, 255))[..., 0] > 127
    face = make_face(t)
    if analyser is not None:  # landmarks found again on the masked photo, as the pipeline would
        analyser.landmarks(img, face)
    roi = roi_of(face, img.shape)
    occ, t_ms = occluded(img, face, roi)
    x0, y0, x1, y1 = roi
    exp = expected_skin(face, roi)
    m = alpha[y0:y1, x0:x1]
    found = float((occ & exp & m).sum() / max(1, (exp & m).sum()))
    fp = float((occ & exp & ~m).sum() / max(1, (exp & ~m).sum()))
    return {"found": round(found, 3), "fp": round(fp, 3), "ms": t_ms, "covered_zone": bool((face.cache.get("skin_zones") or {}).get("covered"))}


def masked(data, analyser) -> dict:
    textures = {p.stem.split("_")[1]: cv2.imread(str(p)) for p in MASK_PHOTOS}
    cases = {}
    for photo, colour in CASES:
        path, faces = data[photo]
        image = cv2.imread(path)
        t = faces[3] if photo == "t1" else max(faces, key=lambda t: (t[0][2] - t[0][0]) * (t[0][3] - t[0][1]))
        cases[f"{photo}+{colour}"] = masked_one(image, t, textures[colour], analyser)
    per_colour = {c: [] for c in textures}
    for name, (path, faces) in data.items():
        image = cv2.imread(path)
        for t in faces:
            for c, tex in textures.items():
                per_colour[c].append(masked_one(image, t, tex, analyser))
    summary = {}
    for c, rs in per_colour.items():
        f = np.array([r["found"] for r in rs])
        fp = np.array([r["fp"] for r in rs])
        summary[c] = {"n": len(rs), "found_mean": round(float(f.mean()), 3), "found_p10": round(float(np.percentile(f, 10)), 3),
                      "frac_found_over_50pct": round(float((f > 0.5).mean()), 3),
                      "fp_mean": round(float(fp.mean()), 3), "fp_p95": round(float(np.percentile(fp, 95)), 3)}
    return {"cases": cases, "all_faces": summary}


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--no-relandmark", action="store_true")
    ap.add_argument("--clean-only", action="store_true")
    ap.add_argument("--baseline", action="store_true", help="the skin model as before the zone check")
    args = ap.parse_args()
    if args.baseline:
        from swapcli.analyse import skin
        skin.covered_sure_zone = lambda *a: (None, {})
    ort.set_default_logger_severity(3)
    from swapcli.analyse.insight import InsightAnalyser
    analyser = InsightAnalyser()
    data = analysed(analyser)
    report = {"clean": clean(data)}
    if not args.clean_only:
        report["masked"] = masked(data, None if args.no_relandmark else analyser)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
