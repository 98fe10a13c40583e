"""Which target pixels a swapped face may replace: the `--mask` set every engine shares.

Masks (`--mask`, several allowed; the final mask is their intersection):
  ghost      GHOST's landmark-adaptive Gaussian mask (blend/ghost_mask.py), in ROI pixels.
  occlusion  what covers the face stays the target's: an XSeg occluder when one is given or
             installed, else the offline estimate (blend/occlusion.py).
  region     face-parser (BiSeNet) classes chosen with --mask-regions.
  area       landmark areas (upper-face, lower-face, mouth), no model.
  box        the aligned crop's square, feathered at its edge.
`--mouth-mask` keeps the target's own mouth on top of any set (Deep-Live-Cam's option).

With no --mask the set is ghost + occlusion, computed exactly as before this module existed
(product of the ghost mask and 1 - offline occlusion), so default outputs do not change.

The model, area and box masks are made as facefusion makes them, on one aligned crop
(arcface_128 at 256 px, the template inswapper and the occluders were run on): each is blurred
(sigma 5 crop px) and its [0.5, 1] stretched to [0, 1], which feathers inwards, so a pixel the
mask excludes is never pasted; they are combined by their minimum there, warped back to the ROI
once and multiplied into the ghost mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from swapcli.analyse.face import MOUTH, MOUTH_CORNERS, Face
from swapcli.core.errors import ModelError, UsageError

log = logging.getLogger("swapcli")

MASK_TYPES = ("box", "occlusion", "region", "area", "ghost")
DEFAULT_MASKS = ("ghost", "occlusion")
# facefusion's region names -> BiSeNet (CelebAMask-HQ) classes.
REGIONS = {"skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5, "glasses": 6,
           "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13}
# facefusion's 68-point areas, in insightface's 106 points: its jaw points 0..16 are every other
# point of the ordered 33-point contour ([1, 10, 12, 14, 16, 3, 5, 7, 0, 23, 21, 19, 32, 30, 28, 26, 17]),
# its brows 17-26 the 106 brows, its nose bottom 31-35 the nostril row, its mouth 48-67 the mouth.
_BROWS = tuple(range(43, 52)) + tuple(range(97, 106))
_NOSE_BOTTOM = (77, 78, 79, 80, 85, 84, 83)
AREAS = {
    "upper-face": (1, 10, 12, 28, 26, 17) + _NOSE_BOTTOM + _BROWS,
    "lower-face": (14, 16, 3, 5, 7, 0, 23, 21, 19, 32, 30) + _NOSE_BOTTOM,
    "mouth": tuple(int(i) for i in MOUTH),
}
CROP, TEMPLATE = 256, "arcface_128"  # where the crop masks are made
BLUR = 5.0  # facefusion's sigma (crop px) before the [0.5, 1] -> [0, 1] stretch
BOX_BLUR = 0.3  # facefusion's --face-mask-blur default: box border and feather, share of half the crop
MOUTH_GROW = 0.15  # --mouth-mask: the target's mouth hull grown by this x mouth width ...
# ... then feathered outwards only (sigma = grow / 3), so the hull itself stays the target's.


@dataclass(frozen=True)
class MaskPlan:
    """The parsed mask options (validated names)."""

    masks: tuple[str, ...] = DEFAULT_MASKS
    regions: tuple[str, ...] = tuple(REGIONS)
    areas: tuple[str, ...] = tuple(AREAS)
    mouth: bool = False
    occluder: str | None = None  # registry name, 'many' or a file; None: the installed one, else offline
    parser: str | None = None
    explicit: bool = False  # --mask given (then the offline fallback is said at info level)

    @property
    def default(self) -> bool:
        return not self.explicit and self.masks == DEFAULT_MASKS and not self.mouth and self.occluder is None


def _names(values: Sequence[str], allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """Names from repeated and/or comma-separated values, checked, in first-seen order."""
    out: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in allowed:
                raise UsageError(f"{flag} '{name}': choose from {', '.join(allowed)}")
            if name not in out:
                out.append(name)
    return tuple(out)


def plan_masks(masks: Sequence[str] = (), regions: Sequence[str] = (), areas: Sequence[str] = (),
               mouth: bool = False, occluder: str | None = None, parser: str | None = None,
               occlusion: bool = True) -> MaskPlan:
    """--mask and friends -> MaskPlan. --mask-regions/--mask-areas/--occluder-model/--parser-model
    add their mask type to the set (giving them without it would silently do nothing)."""
    chosen = list(_names(masks, MASK_TYPES, "--mask"))
    explicit = bool(chosen)
    if not chosen:
        chosen = list(DEFAULT_MASKS if occlusion else ("ghost",))
    region_names = _names(regions, tuple(REGIONS), "--mask-regions")
    area_names = _names(areas, tuple(AREAS), "--mask-areas")
    for given, kind in ((region_names or parser, "region"), (area_names, "area"), (occluder, "occlusion")):
        if given and kind not in chosen:
            chosen.append(kind)
    return MaskPlan(masks=tuple(chosen), regions=region_names or tuple(REGIONS), areas=area_names or tuple(AREAS),
                    mouth=bool(mouth), occluder=occluder or None, parser=parser or None, explicit=explicit)


@dataclass
class FaceMask:
    """One face's masks in its ROI: blend multiplies them into what it pastes."""

    ghost: bool = True  # use the GHOST mask (else the crop masks / engine keep alone bound the paste)
    covered: np.ndarray | None = None  # offline occlusion: 1 where something covers the face
    visible: np.ndarray | None = None  # the other masks: 1 where the swapped face may show


def stretch(mask: np.ndarray) -> np.ndarray:
    """facefusion's post: blur (sigma 5), then [0.5, 1] -> [0, 1] (feathers inwards only)."""
    soft = cv2.GaussianBlur(np.clip(mask, 0.0, 1.0).astype(np.float32), (0, 0), BLUR)
    return (np.clip(soft, 0.5, 1.0) - 0.5) * 2.0


_BOX: dict[int, np.ndarray] = {}


def box_mask(size: int = CROP) -> np.ndarray:
    """The crop square with a zero border, blurred: facefusion's box mask at its default blur."""
    if size not in _BOX:
        amount = int(size * 0.5 * BOX_BLUR)
        area = max(amount // 2, 1)
        box = np.ones((size, size), np.float32)
        box[:area], box[-area:], box[:, :area], box[:, -area:] = 0, 0, 0, 0
        _BOX[size] = cv2.GaussianBlur(box, (0, 0), amount * 0.25) if amount > 0 else box
    return _BOX[size]


def area_mask(landmarks_crop: np.ndarray, areas: Sequence[str], size: int = CROP) -> np.ndarray:
    """Union of the chosen areas' convex hulls (106 points in crop pixels), stretched."""
    mask = np.zeros((size, size), np.float32)
    for name in areas:
        pts = landmarks_crop[list(AREAS[name])].astype(np.float32)
        cv2.fillConvexPoly(mask, np.round(cv2.convexHull(pts)).astype(np.int32), 1.0)
    return stretch(mask)


def mouth_keep(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """1 over the target's mouth (106 points, ROI pixels) and a ring around it, fading outwards."""
    h, w = shape
    pts = np.asarray(landmarks, np.float64)
    width = float(np.linalg.norm(pts[MOUTH_CORNERS[1]] - pts[MOUTH_CORNERS[0]])) + 1e-6
    grow = MOUTH_GROW * width
    sigma = grow / 3.0
    reach = grow + 3.0 * sigma + 2.0
    mouth = pts[MOUTH]
    x0, y0 = np.floor(mouth.min(0) - reach).astype(int)
    x1, y1 = np.ceil(mouth.max(0) + reach).astype(int) + 1
    keep = np.zeros((h, w), np.float32)
    bx0, by0, bx1, by1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if bx1 <= bx0 or by1 <= by0:
        return keep
    hard = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(hard, np.round(cv2.convexHull((mouth - (x0, y0)).astype(np.float32))).astype(np.int32), 1)
    k = 2 * int(round(grow)) + 1
    hard = cv2.dilate(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    # Feathered outwards only: the blur is 0.5 on the grown hull's edge, so doubled it keeps the
    # whole grown hull at 1 and fades beyond it (over about 2 sigma).
    soft = np.clip(cv2.GaussianBlur(hard.astype(np.float32), (0, 0), max(sigma, 0.5)) * 2.0, 0.0, 1.0)
    keep[by0:by1, bx0:bx1] = soft[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
    return keep


_IMAGENET = np.stack([(np.arange(256, dtype=np.float32) / 255.0 - mean) / std
                      for mean, std in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))]).astype(np.float32)


def imagenet_nchw(crops_bgr: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) BGR uint8 -> (B, 3, S, S) RGB ImageNet-normalised, by table look-up
    (swap.crop.to_tensor's result, 10x faster at 512 px)."""
    return np.ascontiguousarray(np.stack([_IMAGENET[c][crops_bgr[..., 2 - c]] for c in range(3)], axis=1))


def to_roi(mask: np.ndarray, matrix: np.ndarray, roi: tuple[int, int, int, int], border: float) -> np.ndarray:
    """A crop-space mask (crop = matrix @ frame) sampled at every ROI pixel; `border` outside the crop."""
    x0, y0, x1, y1 = roi
    m = np.asarray(matrix, np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return cv2.warpAffine(mask, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=float(border))


class Masker:
    """Makes every face's FaceMask for a batch of faces (of many frames): the models run once
    per batch, on the engine's device."""

    def __init__(self, plan: MaskPlan, device: str = "auto", threads: int = 0, weights_dir: str | None = None) -> None:
        from swapcli.blend import mask_models as mm

        self.plan = plan
        self.occluders: list = []
        self.parser = None
        self.offline = False
        if "occlusion" in plan.masks:
            if plan.occluder:
                found = mm.resolve(plan.occluder, mm.OCCLUDER, weights_dir)
            else:
                one = mm.installed(mm.OCCLUDER, weights_dir)
                found = [one] if one else []
            self.occluders = [mm.MaskNet(mm.OCCLUDER, path, device, threads, label) for path, label in found]
            if not self.occluders:
                self.offline = True
                (log.info if plan.explicit else log.debug)(
                    "--mask occlusion: no verified occluder model installed (%s); using the offline estimate",
                    ", ".join(mm.OCCLUDERS))
        if "region" in plan.masks:
            if plan.parser:
                found = mm.resolve(plan.parser, mm.PARSER, weights_dir)
            else:
                one = mm.installed(mm.PARSER, weights_dir)
                if one is None:
                    raise ModelError("--mask region needs a face parser: run `swapcli models download "
                                     f"{mm.PARSERS[0]} --trust-unpinned`, or give --parser-model FILE")
                found = [one]
            self.parser = mm.MaskNet(mm.PARSER, found[0][0], device, threads, found[0][1])
        self.classes = [REGIONS[r] for r in plan.regions]

    @property
    def names(self) -> list[str]:
        """What this masker applies, for reports."""
        out = []
        for kind in self.plan.masks:
            if kind == "occlusion":
                kind += ":" + ("offline" if self.offline else "+".join(o.label for o in self.occluders))
            elif kind == "region":
                kind += ":" + self.parser.label
            out.append(kind)
        return out + (["mouth"] if self.plan.mouth else [])

    def compute(self, items: Sequence[tuple[np.ndarray, Face, tuple[int, int, int, int]]], clock=None) -> list[FaceMask]:
        """FaceMask per (untouched frame, target face, ROI)."""
        from contextlib import nullcontext

        from swapcli.blend.occlusion import occlusion

        def stage(name):
            return clock(name) if clock is not None else nullcontext()

        plan = self.plan
        out = [FaceMask(ghost="ghost" in plan.masks) for _ in items]
        if not items:
            return out
        if self.offline:
            with stage("occlusion"):
                for fm, (frame, face, roi) in zip(out, items):
                    fm.covered = occlusion(frame, face, roi)
        crop_kinds = [k for k in ("box", "area", "region") if k in plan.masks] + (["occlusion"] if self.occluders else [])
        if not crop_kinds and not plan.mouth:
            return out
        with stage("mask"):
            self._crop_masks(items, out, crop_kinds)
        return out

    def _crop_masks(self, items, out: list[FaceMask], kinds: list[str]) -> None:
        from swapcli.core.geometry import apply
        from swapcli.core.templates import align_matrix, warp_crop

        matrices = [align_matrix(face.kps, TEMPLATE, CROP) for _, face, _ in items]
        per_face: list[list[np.ndarray]] = [[] for _ in items]
        if "box" in kinds:
            for masks in per_face:
                masks.append(box_mask())
        if "area" in kinds:
            for masks, (_, face, _), m in zip(per_face, items, matrices):
                if face.landmarks is not None:
                    masks.append(area_mask(apply(m, face.landmarks), self.plan.areas))
        if "occlusion" in kinds:
            crops = np.stack([warp_crop(frame, m, CROP) for (frame, _, _), m in zip(items, matrices)])
            x = crops.astype(np.float32) * (1.0 / 255.0)  # BGR, channels last, as facefusion feeds it
            seen = np.min([net.run(x)[..., 0] for net in self.occluders], axis=0)
            for masks, visible in zip(per_face, seen):
                masks.append(stretch(visible))
        if "region" in kinds:
            scale = self.parser.kind.size / CROP
            crops = np.stack([warp_crop(frame, m * scale, self.parser.kind.size) for (frame, _, _), m in zip(items, matrices)])
            scores = self.parser.run(imagenet_nchw(crops))
            for masks, s in zip(per_face, scores):
                # argmax in a chosen class <=> the best chosen score is the best score (5x faster)
                chosen = (s[self.classes].max(0) >= s.max(0)).astype(np.float32)
                masks.append(stretch(cv2.resize(chosen, (CROP, CROP), interpolation=cv2.INTER_LINEAR)))
        # Outside the crop: a positive mask (box, area, region) says "not this"; an occluder alone
        # says nothing there (the ghost mask or the engine's footprint bounds the paste).
        border = 0.0 if any(k in kinds for k in ("box", "area", "region")) else 1.0
        for fm, masks, m, (_, face, roi) in zip(out, per_face, matrices, items):
            visible = to_roi(np.minimum.reduce(masks), m, roi, border) if masks else None
            if self.plan.mouth and face.landmarks is not None:
                x0, y0, x1, y1 = roi
                keep = mouth_keep(face.landmarks - np.array([x0, y0], np.float32), (y1 - y0, x1 - x0))
                visible = (1.0 - keep) if visible is None else visible * (1.0 - keep)
            fm.visible = visible
