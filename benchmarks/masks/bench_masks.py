"""--mask measurements: stand-in round trips (dB), CPU time per face of each mask type, and
contact sheets of masks drawn over real photos. Writes into this folder:

    python benchmarks/masks/bench_masks.py

Round trips: the identity stand-in generator (inswapper I/O) through the whole pipeline with
each mask set; PSNR against the target over its faces' landmark hulls. The occluder and parser
stand-ins have the real input/output sizes (256 NHWC, 512 NCHW x 19) but no network, so their
times are the mask stage's own work (crop warp, normalisation, blur/stretch, argmax, warp back),
not XSeg's or BiSeNet's inference.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import standins  # noqa: E402
from conftest import PHOTOS, package_file  # noqa: E402

MASK_PHOTOS = [package_file("insightface", "data", "images", f"mask_{c}.jpg") for c in ("black", "blue", "green", "white")]
ALL_SKIN = np.ones((32, 32), np.int64)  # parser stand-in: every pixel is skin
SETS = {  # name -> EngineOptions mask fields
    "ghost + occlusion (default)": {},
    "ghost": {"masks": ("ghost",)},
    "box": {"masks": ("box",)},
    "occlusion (stand-in, all visible)": {"masks": ("occlusion",), "occluder_model": "OCC"},
    "occlusion (offline)": {"masks": ("occlusion",)},
    "region (stand-in, all skin)": {"masks": ("region",), "parser_model": "PAR"},
    "area (all three)": {"masks": ("area",)},
    "ghost + mouth-mask": {"masks": ("ghost",), "mouth_mask": True},
}


def hand_over_face(image: np.ndarray, face) -> np.ndarray:
    """A skin-coloured, shaded hand (palm and four fingers) over the lower-left of a face."""
    out = image.copy()
    x0, y0, x1, y1 = face.bbox
    w, h = x1 - x0, y1 - y0
    layer = np.zeros(image.shape[:2], np.uint8)
    palm = np.array([[x0 - 0.35 * w, y1 + 0.25 * h], [x0 + 0.25 * w, y1 + 0.3 * h], [x0 + 0.45 * w, y0 + 0.75 * h],
                     [x0 + 0.1 * w, y0 + 0.45 * h], [x0 - 0.3 * w, y0 + 0.6 * h]], np.int32)
    cv2.fillPoly(layer, [palm], 255)
    for i in range(4):  # fingers reaching up and right across the cheek and mouth
        a = np.array([x0 + (0.05 + 0.11 * i) * w, y0 + (0.5 + 0.02 * i) * h])
        b = a + np.array([0.35 * w, -0.12 * h + 0.06 * i * h])
        cv2.line(layer, tuple(a.astype(int)), tuple(b.astype(int)), 255, max(3, int(0.09 * w)))
        cv2.circle(layer, tuple(b.astype(int)), max(2, int(0.045 * w)), 255, -1)
    hand = np.zeros_like(image)
    hand[:] = (120, 160, 215)  # a warm skin tone (BGR)
    shade = cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), 0.04 * w)
    hand = np.clip(hand * (0.75 + 0.25 * shade[..., None]), 0, 255)
    for i in range(3):  # knuckle creases
        y = int(y0 + (0.55 + 0.05 * i) * h)
        cv2.line(hand, (int(x0), y), (int(x0 + 0.3 * w), y - int(0.05 * h)), (95, 125, 180), 1)
    alpha = cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), 1.0)[..., None]
    out[:] = np.clip(hand * alpha + image * (1 - alpha), 0, 255).astype(np.uint8)
    return out


def mask_on_face(image: np.ndarray, face, texture: np.ndarray) -> np.ndarray:
    """A face-mask texture (insightface's mask_*.jpg) warped over the nose and lower face:
    top edge at mid-nose height between the cheeks, bottom edge below the chin."""
    lm = face.landmarks
    nose_y = lm[74]
    left, right = lm[12].copy(), lm[28].copy()
    left[1], right[1] = left[1] - (left[1] - nose_y[1]), right[1] - (right[1] - nose_y[1])
    down = (lm[0] - lm[74]) * 0.25
    quad = np.float32([left, right, lm[21] + down, lm[5] + down])
    h, w = texture.shape[:2]
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), quad)
    warped = cv2.warpPerspective(texture, m, image.shape[1::-1], flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.ones((h, w), np.float32), m, image.shape[1::-1])
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.8)[..., None]
    return np.clip(warped * alpha + image * (1 - alpha), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, masks: list[tuple[np.ndarray, tuple[int, int, int]]], box) -> np.ndarray:
    """Masks (frame-sized, [0,1]) tinted over a greyed copy, cropped to `box`, 256 px tall."""
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR).astype(np.float32)
    out = 0.5 * image + 0.5 * grey
    for m, colour in masks:
        a = 0.6 * m[..., None]
        out = out * (1 - a) + np.array(colour, np.float32) * a
    x0, y0, x1, y1 = box
    tile = np.clip(out[y0:y1, x0:x1], 0, 255).astype(np.uint8)
    return cv2.resize(tile, (int(256 * (x1 - x0) / (y1 - y0)), 256), interpolation=cv2.INTER_AREA)


def label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(tile, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def frame_mask(shape, roi, roi_mask) -> np.ndarray:
    m = np.zeros(shape[:2], np.float32)
    x0, y0, x1, y1 = roi
    m[y0:y1, x0:x1] = roi_mask
    return m


def contact_sheets(analyser) -> list[str]:
    from swapcli.blend.masks import Masker, plan_masks
    from swapcli.core.geometry import expand_box

    t1 = cv2.imread(str(PHOTOS["t1"]))
    faces = sorted(analyser.detect(t1), key=lambda f: f.bbox[0])
    victim = faces[1]
    hand = hand_over_face(t1, victim)
    # insightface's mask_*.jpg are face-mask textures (no faces): worn here by real faces.
    masked = []
    for photo, texture in zip(("yaoming", "gdp", "astronaut", "t1"), MASK_PHOTOS):
        image = cv2.imread(str(PHOTOS[photo]))
        face = max(analyser.detect(image), key=lambda f: f.area) if photo != "t1" else faces[3]
        analyser.landmarks(image, face)
        masked.append((f"{photo}+{texture.stem}", mask_on_face(image, face, cv2.imread(str(texture))), face))
    inputs = masked + [("t1_hand", hand, victim)]
    kinds = {
        "occlusion": Masker(plan_masks(["occlusion"])),
        "upper-face": Masker(plan_masks(["area"], areas=["upper-face"])),
        "lower-face": Masker(plan_masks(["area"], areas=["lower-face"])),
        "mouth area": Masker(plan_masks(["area"], areas=["mouth"])),
        "mouth-mask": Masker(plan_masks(["box"], mouth=True)),
    }
    rows, written = [], []
    for name, image, was in inputs:
        # the covered face is found again on the edited photo (then analysed there), or taken as it was
        near = [f for f in analyser.detect(image) if np.abs(f.bbox - was.bbox).sum() < 0.5 * (was.bbox[2] - was.bbox[0])]
        print(f"{name}: covered face {'found again' if near else 'NOT found again (original detection used)'}")
        for face in near[:1] or [was]:
            analyser.landmarks(image, face)
            roi = expand_box(face.landmarks, 0.25, image.shape)
            box = expand_box(face.landmarks, 0.2, image.shape)
            tiles = [label(overlay(image, [], box), f"{name}")]
            occ = kinds["occlusion"].compute([(image, face, roi)])[0]
            covered = frame_mask(image.shape, roi, occ.covered) if occ.covered is not None else np.zeros(image.shape[:2])
            tiles.append(label(overlay(image, [(covered, (0, 0, 255))], box), "occlusion (offline): red=kept"))
            areas = []
            for k, colour in (("upper-face", (255, 120, 0)), ("lower-face", (0, 200, 0)), ("mouth area", (0, 220, 255))):
                fm = kinds[k].compute([(image, face, roi)])[0]
                areas.append((frame_mask(image.shape, roi, fm.visible), colour))
            tiles.append(label(overlay(image, areas, box), "areas: upper/lower/mouth"))
            fm = kinds["mouth-mask"].compute([(image, face, roi)])[0]
            box_m = frame_mask(image.shape, roi, fm.visible)
            tiles.append(label(overlay(image, [(box_m, (255, 0, 255))], box), "box + mouth-mask: pink=pasted"))
            rows.append(np.hstack(tiles))
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 2, 2, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(40, 40, 40)) for r in rows]
    for i in range(0, len(rows), 3):
        path = HERE / f"contact_sheet_{i // 3 + 1}.png"
        cv2.imwrite(str(path), np.vstack(rows[i:i + 3]))
        written.append(str(path.relative_to(ROOT)))
    cv2.imwrite(str(HERE / "t1_hand_input.jpg"), hand, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return written


def round_trips(tmp: Path, analyser) -> dict:
    from swapcli.core.options import EngineOptions
    from swapcli.pipeline.swapper import FaceJob, Swapper

    gen = standins.generator(tmp / "identity.onnx", 128)
    emb = standins.embedder(tmp / "emb.onnx")
    occ = standins.occluder(tmp / "occ.onnx", np.ones((256, 256), np.float32))
    par = standins.parser(tmp / "par.onnx", ALL_SKIN)
    out = {}
    for name, fields in SETS.items():
        fields = {k: (str(occ) if v == "OCC" else str(par) if v == "PAR" else v) for k, v in fields.items()}
        swapper = Swapper(EngineOptions(engine="inswapper", model=str(gen), embedder_model=str(emb), paste="cv2", **fields))
        sources = swapper.load_sources([PHOTOS["gdp"]])
        values = {}
        for photo in ("yaoming", "t1"):
            image = cv2.imread(str(PHOTOS[photo]))
            faces = swapper.detect(image)
            frame = image.copy()
            swapper.swap_frames([(frame, [FaceJob(f, sources) for f in faces])])
            region = np.zeros(image.shape[:2], np.uint8)
            for f in faces:
                cv2.fillConvexPoly(region, cv2.convexHull(f.landmarks.astype(np.int32)), 1)
            changed = np.abs(frame.astype(int) - image).max(2) > 0
            values[photo] = {"psnr_db": round(standins.psnr(frame, image, region), 2),
                             "changed_px_in_faces": int((changed & (region > 0)).sum()), "face_px": int(region.sum())}
        out[name] = values
    return out


def per_face_ms(tmp: Path, analyser, repeats: int = 5) -> dict:
    """Mask stage time per face (Masker.compute over t1's six faces, median of runs), and the
    GHOST mask itself (ghost_mask per face) for comparison."""
    from swapcli.blend.ghost_mask import crop_scale, ghost_mask, params_for
    from swapcli.blend.masks import Masker, plan_masks
    from swapcli.core.geometry import expand_box

    occ = standins.occluder(tmp / "occ_t.onnx")
    par = standins.parser(tmp / "par_t.onnx", ALL_SKIN)
    image = cv2.imread(str(PHOTOS["t1"]))
    faces = analyser.detect(image)
    for f in faces:
        analyser.landmarks(image, f)
    items = [(image, f, expand_box(f.landmarks, 0.3, image.shape)) for f in faces]
    plans = {
        "box": plan_masks(["box"]),
        "area": plan_masks(["area"]),
        "occlusion (offline estimate)": plan_masks(["occlusion"]),
        "occlusion (stand-in XSeg I/O)": plan_masks(["occlusion"], occluder=str(occ)),
        "region (stand-in BiSeNet I/O)": plan_masks(["region"], parser=str(par)),
        "mouth-mask": plan_masks(["ghost"], mouth=True),
    }
    out = {}
    for name, plan in plans.items():
        masker = Masker(plan, device="cpu")
        masker.compute(items[:1])  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            masker.compute(items)
            runs.append((time.perf_counter() - start) * 1000 / len(items))
        out[name] = round(float(np.median(runs)), 2)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _, f, (x0, y0, x1, y1) in items:
            ghost_mask(f.landmarks - (x0, y0), params_for(0.0), (y1 - y0, x1 - x0), crop_scale(f.kps))
        runs.append((time.perf_counter() - start) * 1000 / len(items))
    out["ghost (ghost_mask alone)"] = round(float(np.median(runs)), 2)
    out["_faces"] = len(items)
    out["_roi_px"] = int(np.mean([(x1 - x0) * (y1 - y0) for _, _, (x0, y0, x1, y1) in items]))
    return out


def main() -> None:
    import onnxruntime as ort

    from swapcli.analyse.insight import InsightAnalyser

    ort.set_default_logger_severity(3)
    analyser = InsightAnalyser()
    with tempfile.TemporaryDirectory() as tmp:
        report = {"round_trips": round_trips(Path(tmp), analyser),
                  "ms_per_face_cpu": per_face_ms(Path(tmp), analyser),
                  "contact_sheets": contact_sheets(analyser)}
    (HERE / "results.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
