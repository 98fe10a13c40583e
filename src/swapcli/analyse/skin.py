"""What this face's skin looks like, and how far any pixel is from it.

A per-face colour model (robust centre and spread in CIELAB) learned from the face's own cheeks
and nose. It tells hair, a fringe, glasses frames, a microphone or a mask from skin on the same
face, whatever the person's complexion or the photo's white balance. Lightness gets a wide
tolerance (shading moves it), chroma a narrow one; in a greyscale photo only lightness speaks.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

import cv2
import numpy as np


_LAB_READY = threading.Event()
_LAB_WARMING: list[threading.Thread] = []


def warm_lab() -> None:
    """Build OpenCV's CIELAB tables on a background thread now: its first float conversion
    spends about 90 ms on them, which then overlaps model loading instead of delaying the first
    face. to_lab / from_lab wait for it (the tables' first build is not thread-safe)."""
    if _LAB_WARMING or _LAB_READY.is_set():
        return

    def build() -> None:
        try:
            cv2.cvtColor(np.zeros((1, 1, 3), np.float32), cv2.COLOR_BGR2LAB)
        finally:
            _LAB_READY.set()

    thread = threading.Thread(target=build, name="swapcli-lab-tables", daemon=True)
    _LAB_WARMING.append(thread)
    thread.start()
    # A process that ends while OpenCV builds them is aborted by the C++ runtime (exit -6):
    # a quick error exit waits for the build.
    atexit.register(thread.join)


def _lab_ready() -> None:
    if _LAB_WARMING and not _LAB_READY.is_set():
        _LAB_READY.wait()


def to_lab(bgr: np.ndarray) -> np.ndarray:
    """float32 CIELAB (L 0..100, a/b about -128..127) of a BGR image in 0..255 (any dtype)."""
    _lab_ready()
    return cv2.cvtColor(np.asarray(bgr, dtype=np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2LAB)


def from_lab(lab: np.ndarray) -> np.ndarray:
    _lab_ready()
    return cv2.cvtColor(np.asarray(lab, dtype=np.float32), cv2.COLOR_LAB2BGR) * 255.0


TOL = 2.0  # scales the colour tolerances of the skin models (1 flags shaded skin in warm photos)


def shading_free(lab: np.ndarray) -> np.ndarray:
    """(L, a', b'): chroma divided by lightness, so the same skin in light and in shadow agrees."""
    lab = np.asarray(lab, dtype=np.float32)
    out = lab.copy()
    k = 60.0 / (lab[..., :1] + 10.0)
    out[..., 1:] = lab[..., 1:] * k
    return out


@dataclass(frozen=True)
class SkinModel:
    centre: np.ndarray  # (3,) L, a', b' (see shading_free)
    spread: np.ndarray  # (3,) robust standard deviations
    grey: bool  # the photo carries no colour here (greyscale or a monochrome tint)

    def distance(self, lab: np.ndarray, tol: float | None = None) -> np.ndarray:
        """Normalised distance to this skin (about 1 at the edge of its variation), its colour
        tolerances scaled by `tol` (default TOL). Lightness gets a wide tolerance: shading moves it
        more than any change of material."""
        k = TOL if tol is None else tol
        tol = np.array([TOL * (3.0 * max(self.spread[0], 6.0) + 20.0), k * (3.0 * self.spread[1] + 5.0),
                        k * (3.0 * self.spread[2] + 5.0)], dtype=np.float32)
        d = (shading_free(lab) - self.centre.astype(np.float32)) / tol
        return np.sqrt((d * d).sum(-1))

    def likelihood(self, lab: np.ndarray, tol: float | None = None) -> np.ndarray:
        """1 = plainly this skin, 0 = plainly not, linear in between."""
        return np.clip(2.0 - self.distance(lab, tol), 0.0, 1.0)


def fit_skin(lab_pixels: np.ndarray) -> SkinModel | None:
    """Robust model from (N, 3) Lab samples of skin (other materials in the minority are fine)."""
    x = shading_free(np.asarray(lab_pixels, dtype=np.float32).reshape(-1, 3))
    if len(x) < 20:
        return None
    centre = np.median(x, axis=0)
    spread = 1.4826 * np.median(np.abs(x - centre), axis=0)
    keep = np.abs(x - centre) <= 3.0 * spread + 1e-3
    x = x[keep.all(1)] if keep.all(1).sum() >= 20 else x
    centre = np.median(x, axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(x - centre), axis=0), 0.5)
    grey = bool(np.hypot(*np.percentile(np.abs(x[:, 1:]), 95, axis=0)) < 3.0 and spread[1:].max() < 1.5)
    return SkinModel(centre=centre, spread=spread, grey=grey)


# --------------------------------------------------------------------------- per face

DARK_LIMIT = 30.0  # L units darker than the skin around it: hair, frames, a microphone (not shadow)
DARK_LIMIT_STRICT = 15.0  # ... catches stubble too, and some deep shadow (for sources, which are inpainted)
LOCAL_SIGMA = 0.2  # window of "the skin around it", in eye distances
NEIGHBOURHOOD = 0.05  # skin is judged over neighbourhoods this wide (eye distances): no specks


def sure_skin_triangles() -> np.ndarray:
    """Mesh triangles that are skin on nearly everyone: the cheeks and the nose between the lower
    eyelids and the nostrils (no beard, no fringe, no lashes, below most glasses' lenses)."""
    from swapcli.analyse import mesh

    tris = mesh.triangles()
    ys = mesh.TEMPLATE[tris][..., 1].mean(1)
    return ((mesh.regions() == mesh.SKIN) & (ys <= mesh.TEMPLATE[80, 1])
            & (ys >= mesh.TEMPLATE[mesh.LEFT_EYE_RING, 1].max() + 0.12))


def face_pose(face):
    """The 3D head pose fitted to a face's 106 landmarks (cached on the face)."""
    from swapcli.analyse import mesh

    pose = face.cache.get("pose3d")
    if pose is None:
        pose = mesh.fit_pose(face.landmarks)
        face.cache["pose3d"] = pose
    return pose


def face_box(face, shape: tuple[int, ...], margin: float = 0.1) -> tuple[int, int, int, int]:
    """Integer box around the face and the forehead just above its brows, grown by `margin` eye
    distances, clipped to the picture."""
    from swapcli.analyse import mesh

    verts = mesh.place(face.landmarks, face_pose(face))
    verts = np.vstack([verts[:106], verts[mesh.FOREHEAD_ROW1]])
    pad = margin * face_pose(face).scale
    h, w = shape[:2]
    x0, y0 = np.floor(verts.min(0) - pad).astype(int)
    x1, y1 = np.ceil(verts.max(0) + pad).astype(int) + 1
    return max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))


WORK_IOD = 56.0  # faces are judged on a grid where the eyes are at most this many pixels apart


@dataclass(frozen=True)
class FacePatch:
    """A face's box, shrunk so its eyes are at most WORK_IOD pixels apart: its CIELAB pixels and
    its own mesh rasterised there. Skin is judged on it, at a cost that does not grow with the face."""

    box: tuple[int, int, int, int]  # in the image
    factor: float  # patch pixels per image pixel
    lab: np.ndarray
    raster: object
    pose: object

    def to_patch(self, xy: np.ndarray) -> np.ndarray:
        x0, y0 = self.box[:2]
        return ((np.asarray(xy, np.float32) - (x0, y0) + 0.5) * self.factor - 0.5).astype(np.float32)


def face_patch(image: np.ndarray, face) -> FacePatch | None:
    """The face's patch (cached on the face); None when the face has no area in the picture."""
    if "patch" in face.cache:
        return face.cache["patch"]
    from swapcli.analyse import mesh
    from swapcli.core.raster import rasterise

    x0, y0, x1, y1 = face_box(face, image.shape)
    patch = None
    if x1 - x0 >= 4 and y1 - y0 >= 4:
        pose = face_pose(face)
        factor = min(1.0, WORK_IOD / pose.scale)
        crop = image[y0:y1, x0:x1]
        if factor < 1.0:
            size = (max(4, int(round((x1 - x0) * factor))), max(4, int(round((y1 - y0) * factor))))
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            factor = size[0] / (x1 - x0)
        verts = (mesh.place(face.landmarks, pose) - (x0, y0) + 0.5) * factor - 0.5
        raster = rasterise(verts, mesh.triangles(), crop.shape[:2], pose.depth(mesh.TEMPLATE))
        patch = FacePatch((x0, y0, x1, y1), factor, to_lab(crop), raster, pose)
    face.cache["patch"] = patch
    return patch


def face_skin(image: np.ndarray, face) -> SkinModel | None:
    """This face's skin colour, learned from its surest skin (cached on the face).

    The sure-skin zone (cheeks and nose) is checked against the skin above it (the band under the
    eyes and the bridge of the nose): where something covers the zone (a face mask, a scarf, a
    microphone), the model is learned from the skin that shows instead (see covered_sure_zone)."""
    if "skin" in face.cache:
        return face.cache["skin"]
    patch = face_patch(image, face)
    model = None
    if patch is not None:
        r, pose = patch.raster, patch.pose
        sel = r.per_triangle(sure_skin_triangles(), False) & (r.gather(pose.visibility()) > 0.5)
        model = fit_skin(patch.lab[sel])
        if model is not None:
            found = covered_sure_zone(patch, sel, model)
            face.cache["skin_zones"] = found[1]
            model = found[0] or model
    face.cache["skin"] = model
    return model


# Zones of the mesh's template (x across, y down, eye distances; eyes at y = 0, nose tip 0.64).
UNDER_EYES = (0.04, 0.24)  # y band under the lower lids, above where masks and scarves reach
BRIDGE = (-0.35, 0.0, 0.2)  # y range and half-width of the nose bridge between the eyes
FOREHEAD_LOW = (-0.85, 0.45)  # forehead just above the brows: lowest y, half-width
ZONE_L = 25.0  # lightness difference (L units) beyond which two patches of skin are not one skin
ZONE_TOL = 1.0  # chroma tolerance (model units) of the zone tests
ZONE_SHARE = 0.7  # the sure zone is suspect when less of it than this matches the skin above it
ZONE_AB = 8.0  # shading-free chroma between the medians of two zones beyond which they differ
WARMER = 4.0  # shading-free chroma along skin's hue that counts as evidence
PALE = 0.35  # ... and the share of the skin's warmth below which a material is not skin


def sure_zone_parts(patch: "FacePatch") -> dict[str, np.ndarray]:
    """Patch-sized masks of the reference zones: 'above' (the band under the eyes and the nose
    bridge) and 'forehead' (its centre just above the brows), visible parts only."""
    from swapcli.analyse import mesh

    r, pose = patch.raster, patch.pose
    vis = r.gather(pose.visibility()) > 0.5
    region = r.per_triangle(mesh.regions(), -1)
    tx, ty = r.gather(mesh.TEMPLATE[:, 0]), r.gather(mesh.TEMPLATE[:, 1])
    skin = (region == mesh.SKIN) & vis
    under = skin & (ty > UNDER_EYES[0]) & (ty < UNDER_EYES[1])
    bridge = skin & (ty > BRIDGE[0]) & (ty < BRIDGE[1]) & (np.abs(tx) < BRIDGE[2])
    forehead = (region == mesh.FOREHEAD) & vis & (ty > FOREHEAD_LOW[0]) & (np.abs(tx) < FOREHEAD_LOW[1])
    return {"above": under | bridge, "forehead": forehead}


def _distance(model: SkinModel, x: np.ndarray) -> np.ndarray:
    """Normalised distance of shading-free pixels (N, 3) to `model` for the zone tests: chroma
    over ZONE_TOL of its variation, lightness over ZONE_L (or three spreads)."""
    d_ab = (x[:, 1:] - model.centre[1:]) / (ZONE_TOL * (3.0 * model.spread[1:] + 5.0))
    d_l = (x[:, 0] - model.centre[0]) / max(ZONE_L, 3.0 * float(model.spread[0]))
    return np.sqrt((d_ab * d_ab).sum(-1) + d_l * d_l)


def _matches(model: SkinModel, x: np.ndarray) -> np.ndarray:
    """Shading-free pixels (N, 3) that are plainly the same material as `model`."""
    return _distance(model, x) <= 1.0


def _warmth(x: np.ndarray) -> float:
    """Shading-free chroma of the median pixel along skin's hue (reddish yellow, 50 degrees)."""
    return float(np.median(x[:, 1]) * 0.6428 + np.median(x[:, 2]) * 0.7660)


def _fit_shading_free(x: np.ndarray) -> SkinModel | None:
    return fit_skin(unshade(x))


def unshade(x: np.ndarray) -> np.ndarray:
    """The inverse of shading_free."""
    out = np.asarray(x, np.float32).copy()
    out[..., 1:] = out[..., 1:] * ((out[..., :1] + 10.0) / 60.0)
    return out


def covered_sure_zone(patch: "FacePatch", sure: np.ndarray, model: SkinModel) -> tuple[SkinModel | None, dict]:
    """A skin model learned around what covers the sure-skin zone, or None when nothing does.

    The zone is compared with the skin above it (under the eyes, the nose bridge). When most of
    it matches, nothing changes. When a large part does not, either that part is something over
    the zone (a mask, a scarf, a microphone: the skin above is the face's) or the skin above is
    covered (sunglasses, a fringe over the bridge). Decided on two votes: a skin-chroma prior
    (skin is warmer, reddish yellow, than blue, green, black or white fabric) and which of the
    two the forehead's centre matches; in a greyscale photo only the forehead votes. When the
    zone is covered, the model is refitted on the pixels of the zone and of the skin above that
    match the skin above."""
    info: dict = {"covered": False}
    parts = sure_zone_parts(patch)
    if parts["above"].sum() < 20:
        return None, info
    lab = cv2.GaussianBlur(patch.lab, (0, 0), 1.0)  # zone tests on small neighbourhoods: no specks
    above = shading_free(lab[parts["above"]])
    zone = shading_free(lab[sure])
    ref = fit_skin(lab[parts["above"]])
    if ref is None:
        return None, info
    in_zone = _matches(ref, zone)
    share = float(in_zone.mean())
    # The zone's own model (its median material) against the skin above, at the median level.
    gap = np.abs(model.centre - ref.centre)
    apart = bool(np.hypot(*gap[1:]) > ZONE_AB or gap[0] > ZONE_L)
    info.update(share=round(share, 3), gap=[round(float(g), 1) for g in gap])
    if share >= ZONE_SHARE and not apart:
        return None, info
    if apart:  # the zone's pixels nearer to its own median material than to the skin above
        in_zone &= ~(_distance(model, zone) < _distance(ref, zone))
    if in_zone.all():
        return None, info
    other = zone[~in_zone]  # what the zone shows that is not the skin above
    colour = not (model.grey and ref.grey)
    warm = 0
    if colour:
        w_other, w_above = _warmth(other), _warmth(above)
        info["warmth"] = (round(w_other, 1), round(w_above, 1))
        # Skin in highlight or shadow keeps much of its warmth; fabric and plastic have little.
        warm = int(w_other < min(w_above - WARMER, PALE * w_above)) - int(w_other - w_above > WARMER)
    forehead = shading_free(lab[parts["forehead"]])
    odd = _fit_shading_free(other)
    brow = 0
    if len(forehead) >= 20 and odd is not None:
        f_ref, f_odd = float(_matches(ref, forehead).mean()), float(_matches(odd, forehead).mean())
        info["forehead"] = (round(f_odd, 2), round(f_ref, 2))
        brow = int(f_ref > 0.5 and f_odd < 0.5) - int(f_odd > 0.5 and f_ref < 0.5)
    info["votes"] = (warm, brow)
    # In colour the chroma prior must say "not skin" and the forehead must not say otherwise (a
    # lit cheek is paler than the skin under the eyes and unlike the forehead, yet warm enough);
    # in a greyscale photo the forehead decides alone.
    if not ((warm > 0 and brow >= 0) if colour else brow > 0):
        return None, info
    refit = _fit_shading_free(np.concatenate([zone[in_zone], above[_matches(ref, above)]]))
    info["covered"] = refit is not None and odd is not None
    info["occluder"] = odd
    return refit, info


def decisive(likelihood: np.ndarray, sigma: float) -> np.ndarray:
    """Likelihood averaged over a neighbourhood, then made decisive (mostly skin -> 1)."""
    m = cv2.GaussianBlur(likelihood.astype(np.float32), (0, 0), sigma)
    t = np.clip((m - 0.45) / 0.35, 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class SkinMap:
    """Where a photo shows a face's clean skin, on the face's patch (1 skin, 0 not; 1 outside)."""

    patch: FacePatch
    values: np.ndarray  # float32, patch-sized (or several maps as channels)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.patch.box

    def sample(self, xy: np.ndarray) -> np.ndarray:
        """Values at image positions (..., 2) (bilinear; 1 outside the box)."""
        p = self.patch.to_patch(xy)
        return cv2.remap(self.values, p[..., 0], p[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(1.0, 1.0, 1.0, 1.0))


def skin_map(image: np.ndarray, face, dark_limit: float | None = None, tol: float | None = None) -> SkinMap | None:
    """Where the photo shows this face's clean skin (1) or something else (0): hair, a fringe, a
    dark beard, glasses frames, a microphone, a mask. Judged on colour with shading removed, and on
    being much darker than the skin around it (hair is, shadow is not), over small neighbourhoods,
    in the face's box; `tol` scales the colour tolerance. Cached on the face. None when the face has
    no measurable skin."""
    limit = DARK_LIMIT if dark_limit is None else dark_limit
    key = f"skin_map:{limit:g}:{tol}"
    if key in face.cache:
        return face.cache[key]
    from swapcli.core.geometry import soft_mean

    model = face_skin(image, face)
    patch = face_patch(image, face)
    out = None
    if model is not None and patch is not None:
        scale = patch.pose.scale * patch.factor
        lab = patch.lab
        colour = model.likelihood(lab, tol)
        # The skin around a pixel, measured only on skin that is not itself far darker than this
        # face's skin (else a large dark object would be its own reference).
        reference = colour * np.clip((lab[..., 0] - (model.centre[0] - 2 * limit)) / limit, 0.0, 1.0) \
            if np.isfinite(limit) else None
        local = soft_mean(lab[..., :1], reference, max(2.0, LOCAL_SIGMA * scale), prior_weight=0.05)[..., 0] \
            if np.isfinite(limit) else None
        dark = np.clip((lab[..., 0] - (local - limit)) / 8.0 + 0.5, 0.0, 1.0) if np.isfinite(limit) else 1.0
        values = decisive(np.minimum(colour, dark), max(1.0, NEIGHBOURHOOD * scale))
        out = SkinMap(patch, values.astype(np.float32))
    face.cache[key] = out
    return out


def covered_zone_map(image: np.ndarray, face) -> SkinMap | None:
    """Where the photo shows this face's skin by the zone test's stricter measure (lightness
    within ZONE_L too), only for faces whose sure-skin zone was found covered (covered_sure_zone);
    None otherwise. A black or white mask in a photo with little colour differs from the skin in
    lightness alone, which skin_map tolerates (shading moves it). Cached on the face."""
    if "zone_map" in face.cache:
        return face.cache["zone_map"]
    model = face_skin(image, face)
    out = None
    if model is not None and face.cache.get("skin_zones", {}).get("covered"):
        patch = face_patch(image, face)
        scale = patch.pose.scale * patch.factor
        x = shading_free(patch.lab).reshape(-1, 3)
        d_skin = _distance(model, x)
        d_occluder = _distance(face.cache["skin_zones"]["occluder"], x)
        # plainly unlike the skin, or more like what covers the zone than like the skin
        like = np.minimum(np.clip(2.0 - d_skin, 0.0, 1.0), np.clip(0.5 + d_occluder - d_skin, 0.0, 1.0))
        like = like.reshape(patch.lab.shape[:2])
        out = SkinMap(patch, decisive(like, max(1.0, NEIGHBOURHOOD * scale)).astype(np.float32))
    face.cache["zone_map"] = out
    return out
