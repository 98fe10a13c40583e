"""The embedded default engine: a 3D-mesh face transplant that needs no downloaded weights.

A face swap changes who the face is and nothing else, so:
- Geometry stays the target's: outline, head pose, expression (mouth opening and shape, eye
  openness, gaze). Only the places of the features (eyes, brows, nose, mouth) move part of the way
  to the source's, measured in a frontal view and turned back into the target's pose; the source's
  brows and nose keep their own shape.
- Texture is the source's skin and features, carried onto the target through one generic 3D face
  mesh (analyse.mesh) rasterised in the target's pose, nearest triangles in front. A turned
  source fills the half it hides from its mirror image.
- What is not face in the source (a fringe, glasses frames, stray hair) is painted over with the
  source's own nearby skin; what the source cannot show (both sides turned away, landmarks that fit
  no head) stays the target's.
- The target keeps its mouth's inside when open, its lips when the two mouths are held differently
  (a pout, a grin), and its whole eyes with their lids when source and target eyes differ in being
  open or shut (or the source's are hidden by sunglasses). Everything above the brows
  (hair, hairline, forehead) and beyond the outline stays the target's.
- Light, colour, sharpness and grain are the target photo's (swap.appearance).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from swapcli.analyse import mesh
from swapcli.analyse.face import Face, expression_gaps, mirror_face, mouth_opening
from swapcli.analyse.skin import (
    DARK_LIMIT_STRICT,
    WORK_IOD,
    SkinMap,
    face_patch,
    face_pose,
    face_skin,
    from_lab,
    skin_map,
    to_lab,
    warm_lab,
)
from swapcli.blend.occlusion import COLOUR_TOL
from swapcli.core.geometry import soft_mean
from swapcli.core.raster import rasterise
from swapcli.swap.appearance import colour_fields, match_grain
from swapcli.swap.base import SourceFace, SwapResult

LAYOUT_STRENGTH = 0.5  # how far feature places move to the source's (0 target's, 1 source's)
OPEN_MOUTH = 0.08  # inner-lip gap / mouth width above which a mouth counts as open
LIP_INSET, LIP_INSET_OPEN = 0.2, 0.6  # lips are sampled this far out from the inner lip line (closed / open)
EYE_CLOSED, EYE_OPEN = 0.17, 0.27  # lid opening / eye width of a shut and of an open eye (frontal)
EYE_SHAPE_SHARE = 0.2  # open eyes: how far their height moves towards the source's
HIDDEN_EYE = 0.75  # an eye whose lids and opening stay darker than this share of the skin is hidden (sunglasses)
STRETCH_OK, STRETCH_MAX = 1.8, 3.0  # a source patch enlarged this much more than the face: fine .. not used
TURN_LIMIT = 60.0  # degrees of target turn at which the layout no longer moves
WIDTH_LIMIT = 1.3  # eyes and mouth widths change at most by this factor
COLOUR_SIGMA = 0.4  # local light and colour window, eye distances
MIRROR_MARGIN, MIRROR_RAMP = 0.15, 0.3  # the mirror side takes over where it faces the camera this much better
INPAINT_SIGMA = 0.25  # source skin painted over non-skin comes from this far around, eye distances
MIRROR_PENALTY = 8.0  # degrees: a mirror image is chosen only when it matches the turn clearly better
MAX_YAW_GAP = 45.0  # degrees of turn between source and target beyond which the result is limited
MAX_SOURCE_YAW = 55.0  # a source turned further than this shows too little of its face
MISFIT_OK, MISFIT_BAD = 0.04, 0.065  # landmark misfit to a rigid head (eye distances): trusted .. not
SOURCE_DARK = 30.0  # L units darker than the skin around it that count as hair or frames on a source
EYES = (mesh.LEFT_EYE_RING, mesh.RIGHT_EYE_RING)
# Eyes whose closedness differs by more than this (0..1) keep the target's eye and lids, fully
# from FROM + RAMP: a source eye squeezed into a squint or stretched over a shut one looks broken.
EYE_KEEP_FROM, EYE_KEEP_RAMP = 0.25, 0.25
# Mouths held differently (opening or smile, in expression units) keep the target's lips and
# mouth: a source's pout, grin or lipstick pasted into another expression looks broken. The ramp
# is short: half the source's lips over half the target's shows both.
MOUTH_KEEP_FROM, MOUTH_KEEP_RAMP = 1.5, 0.3
# Unsharp amount per doubling of the source's enlargement (enlarging softens; grain matching
# still blurs a face that ends up crisper than the photo).
SHARPEN = 0.7
# An enlarged source is rendered at this many pixels per source pixel (then enlarged to full
# resolution, bicubic): it has no finer detail, and its colour work then costs a fraction.
RENDER_DENSITY = 1.5


def _width(points: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(points[b] - points[a])) + 1e-9


def _reshape(shape: np.ndarray, centre: np.ndarray, place: np.ndarray, wide: float, tall: float) -> np.ndarray:
    """A feature's shape moved from `centre` to `place`, scaled by `wide` sideways and `tall`
    up and down (frontal axes)."""
    out = shape - centre
    out[:, 0] *= float(np.clip(wide, 1 / WIDTH_LIMIT, WIDTH_LIMIT))
    out[:, 1] *= float(tall)
    return out + place


def destination(lt: np.ndarray, pose_t: mesh.HeadPose, ls: np.ndarray, pose_s: mesh.HeadPose,
                strength: float | None = None, eye_shares: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Where the result's 106 landmarks go (image pixels).

    Worked out in the frontal view, `strength` of the way from the target's layout to the source's:
    the places of eyes, brows, nose and mouth, the widths of eyes and mouth, the shapes of brows
    and nose. Heights of eyes and mouth (how open, how smiling) stay the target's, in proportion
    to the result's eye distance, so the expression measures of the result are the target's. The
    outline is the target's. The displacement is turned into the target's pose.
    """
    k = LAYOUT_STRENGTH if strength is None else strength
    # A turned face shows its layout foreshortened and its outline is its profile: the layout
    # moves less the more the target is turned.
    k *= float(np.clip(1.0 - abs(pose_t.yaw) / TURN_LIMIT, 0.0, 1.0))
    ft = mesh.frontal(lt, pose_t)
    fs = mesh.frontal(ls, pose_s)
    new = ft + k * (fs - ft)  # brows and nose: the source's shape and place, partly
    eyes_t = [ft[ring].mean(0) for ring in EYES]
    eyes_d = [a + k * (fs[ring].mean(0) - a) for a, ring in zip(eyes_t, EYES)]
    v = np.linalg.norm(eyes_d[1] - eyes_d[0]) / (np.linalg.norm(eyes_t[1] - eyes_t[0]) + 1e-9)
    for ring, pupils, c_t, c_d, share in zip(EYES, ((34, 38), (88, 92)), eyes_t, eyes_d, eye_shares):
        idx = np.r_[ring, pupils]
        # Open eyes: their height moves `share` of the way to the source's (round or narrow eyes
        # are who someone is, not an expression).
        open_ratio = np.clip(eye_openness(ls, ring) / max(eye_openness(lt, ring), 1e-3), 0.5, 2.0) ** share
        new[idx] = _reshape(ft[idx], c_t, c_d, (_width(fs, ring[0], ring[4]) / _width(ft, ring[0], ring[4])) ** k,
                            v * open_ratio)
    # In a turned face the nose tip is the outline, and the outline stays the target's.
    side = np.clip(1.0 - abs(pose_t.yaw) / 35.0, 0.0, 1.0)
    new[mesh.NOSE, 0] = ft[mesh.NOSE, 0] + side * (new[mesh.NOSE, 0] - ft[mesh.NOSE, 0])
    mouth, corners = np.arange(52, 72), [52, 61]
    c_t = ft[corners].mean(0)
    new[mouth] = _reshape(ft[mouth], c_t, c_t + k * (fs[corners].mean(0) - c_t),
                          (_width(fs, 52, 61) / _width(ft, 52, 61)) ** k, v)
    chin_gap = ft[0, 1] - ft[53, 1]  # the mouth stays clear of the chin
    if new[53, 1] > ft[0, 1] - 0.6 * chin_gap:
        new[mouth, 1] -= new[53, 1] - (ft[0, 1] - 0.6 * chin_gap)
    delta = new - ft
    delta[mesh.CONTOUR_PATH] = 0.0
    return np.asarray(lt, dtype=np.float64) + mesh.to_image_delta(delta, pose_t)


def mouth_difference(a: np.ndarray, b: np.ndarray) -> float:
    """How differently two faces hold their mouths: the larger of the differences in opening and in
    smile, in eval's expression units (either one alone changes the expression)."""
    return float(expression_gaps(a, b, ("mouth_open", "smile")).max())


def inset_openings(verts: np.ndarray, eyes: tuple[bool, bool] = (True, True), lips: float = LIP_INSET) -> np.ndarray:
    """Pull the source's inner lip line (and the rims of the eyes whose opening is not taken from
    the source) away from the openings, so its lips and lids are sampled on lips and lids, not on
    its teeth, lashes or the whites of its eyes."""
    v = verts.copy()
    outer_for_inner = {65: 64, 66: 63, 62: 71, 70: 67, 69: 68, 57: 59, 60: 53, 54: 56}
    for i, o in outer_for_inner.items():
        v[i] = v[i] + lips * (v[o] - v[i])
    for ring, inset in zip(EYES, eyes):
        if inset:
            # Away from the eye's centre line by a share of its width, so even a closed eye's lids
            # are sampled on skin above and below the lashes.
            p = v[ring]
            axis = p[4] - p[0]
            width = np.linalg.norm(axis) + 1e-9
            down = np.array([-axis[1], axis[0]]) / width
            c = p.mean(0)
            side = np.sign((p - c) @ down)
            v[ring] = c + (p - c) * 1.08 + np.outer(side * np.where(side < 0, 0.10, 0.07), down) * width
    return v


def eye_openness(lmk: np.ndarray, ring: np.ndarray) -> float:
    """Lid opening of one eye as a share of its width (corner to corner)."""
    p = np.asarray(lmk, dtype=np.float64)[ring]
    axis = p[4] - p[0]
    width = np.linalg.norm(axis) + 1e-9
    normal = np.array([-axis[1], axis[0]]) / width
    return float(np.ptp(p @ normal) / width)


def closedness(openness: float) -> float:
    """0 for an open eye, 1 for a closed one, in between for a squint or a downward look.
    Openness within the open range (narrow or round eyes) is who someone is, not expression."""
    return float(np.clip((EYE_OPEN - openness) / (EYE_OPEN - EYE_CLOSED), 0.0, 1.0))


def shut_eyes(landmarks: np.ndarray, pose: mesh.HeadPose) -> list[float]:
    """Closedness of both eyes, corrected for the head turn (which narrows an eye's width)."""
    turn = np.cos(np.radians(min(abs(pose.yaw), 60.0)))
    return [closedness(eye_openness(landmarks, ring) * turn) for ring in EYES]


def periocular(uv: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Soft map of an eye and its lids in the layout: 1 over the eye and lids, 0 at the brow and
    down the cheek."""
    c = mesh.UV[ring].mean(0)
    half_w = 0.5 * np.ptp(mesh.UV[ring][:, 0])
    du = (uv[..., 0] - c[0]) / (1.45 * half_w)
    dv = uv[..., 1] - c[1]
    dv = np.where(dv < 0, dv / 0.13, dv / 0.16)
    d = np.sqrt(du * du + dv * dv)
    return np.clip((1.5 - d) / 0.5, 0.0, 1.0).astype(np.float32)


def stretch(v_dst: np.ndarray, v_src: np.ndarray, zoom: float) -> np.ndarray:
    """Per triangle, how much more a patch is enlarged from the source than the face as a whole
    (1 = as much; large where the source shows the patch edge-on)."""
    tris = mesh.triangles()

    def areas(v):
        a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
        return np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))

    return np.sqrt(areas(v_dst) / np.maximum(areas(v_src) * zoom * zoom, 1e-6)).astype(np.float32)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a.astype(np.float32), (0, 0), max(0.7, sigma))


class _SourceView:
    """One source photo (or its mirror image) prepared once for every target: pose, mesh, skin."""

    def __init__(self, image: np.ndarray, face: Face) -> None:
        self.image = image
        self.face = face
        self.pose = mesh.fit_pose(face.landmarks)
        self.verts = mesh.place(face.landmarks, self.pose)
        self.shut = shut_eyes(face.landmarks, self.pose)
        self.visibility = self.pose.visibility()
        # How far the 106 points stray from any rigid head: near profiles and extreme expressions
        # give landmarks the mesh cannot trust.
        fit = self.pose.project(mesh.TEMPLATE[mesh.RIGID]) - np.asarray(face.landmarks, np.float64)[mesh.RIGID]
        self.misfit = float(np.abs(fit).mean() / self.pose.scale)
        self.trust = float(np.clip((MISFIT_BAD - self.misfit) / (MISFIT_BAD - MISFIT_OK), 0.0, 1.0))
        self.skin = face_skin(image, face)
        # Three skin maps of the source, on its face patch, as the channels of one: plainly not
        # skin (painted over), not skin-coloured (a dark beard is), surely skin (where light is
        # measured). None when the source has no measurable skin.
        maps = [skin_map(image, face, SOURCE_DARK), skin_map(image, face, float("inf")),
                skin_map(image, face, DARK_LIMIT_STRICT)]
        self.maps = None if None in maps else SkinMap(maps[0].patch, np.dstack([m.values for m in maps]))
        self.hidden = self._hidden_eyes()

    def _hidden_eyes(self) -> list[bool]:
        """Eyes the source photo does not show (sunglasses): eye and lids uniformly dark."""
        patch = face_patch(self.image, self.face)
        if self.skin is None or patch is None:
            return [False, False]
        r = patch.raster
        around = r.per_triangle(np.isin(mesh.regions(), (mesh.EYE, mesh.LIDS)), False)
        left = r.gather(mesh.UV[:, 0]) < 0
        out = []
        for side in (left, ~left):
            sel = around & side
            out.append(bool(sel.sum() > 10 and np.percentile(patch.lab[..., 0][sel], 90)
                            < HIDDEN_EYE * self.skin.centre[0]))
        return out


@dataclass
class _Pyramid:
    """An image at the level of its pyramid that suits a sampling grid, and how to address it."""

    image: np.ndarray
    factor: float  # level pixels per full-image pixel
    origin: tuple[int, int] = (0, 0)  # full-image pixel at the level's (0, 0) corner (a crop's)

    def to(self, xy: np.ndarray) -> np.ndarray:
        """Full-image positions as positions in this level (cv2 pixel centres)."""
        if self.factor == 1.0 and self.origin == (0, 0):
            return xy
        return ((xy - np.array(self.origin, np.float32) + 0.5) * self.factor - 0.5).astype(np.float32)


def _for_grid(image: np.ndarray, image_scale: float, grid_scale: float,
              box: tuple[int, int, int, int] | None = None) -> _Pyramid:
    """Shrink an image by halves while the grid samples it at least twice as coarsely, so
    sampling a big face on the small grid does not alias. With `box` (x0, y0, x1, y1, the only
    part sampled) just a crop around it is shrunk: cut on the pyramid's pixel grid with a margin,
    its levels equal the whole image's there."""
    levels, h, w = 0, image.shape[0], image.shape[1]
    while image_scale * 0.5 ** levels > 2.0 * grid_scale and min(h, w) > 32:
        levels, h, w = levels + 1, (h + 1) // 2, (w + 1) // 2
    if levels == 0:
        return _Pyramid(image, 1.0)
    origin = (0, 0)
    if box is not None:
        step, margin = 1 << levels, 8 << levels
        x0 = max(0, (box[0] - margin) // step * step)
        y0 = max(0, (box[1] - margin) // step * step)
        image = image[y0:min(image.shape[0], box[3] + margin), x0:min(image.shape[1], box[2] + margin)]
        origin = (x0, y0)
    for _ in range(levels):
        image = cv2.pyrDown(image)
    return _Pyramid(image, 0.5 ** levels, origin)


@dataclass
class _Pixels:
    """Per-pixel quantities of one swap, interpolated over the rasterised mesh."""

    src: np.ndarray  # (h, w, 2) where the source shows this point
    mir: np.ndarray  # ... and where its mirror side shows it
    tgt: np.ndarray  # ... and where the target shows it
    vis: np.ndarray  # how squarely the source shows it
    vis_mir: np.ndarray
    uv: np.ndarray  # (h, w, 2) layout position
    top: np.ndarray  # 1 below the brows' top, 0 on the forehead rows


def _gather(r, verts_s: np.ndarray, v_tgt: np.ndarray, visibility: np.ndarray) -> _Pixels:
    top = np.ones(mesh.N_VERTS)
    top[mesh.FOREHEAD_VERTS] = 0.0
    table = np.column_stack([verts_s, verts_s[mesh.MIRROR_VERTS], v_tgt, visibility, visibility[mesh.MIRROR_VERTS],
                             mesh.UV, top]).astype(np.float32)
    g = r.gather(table)
    return _Pixels(g[..., 0:2], g[..., 2:4], g[..., 4:6], g[..., 6], g[..., 7], g[..., 8:10], g[..., 10])


class MorphEngine:
    """Embedded default: no downloaded weights, runs anywhere."""

    name = "morph"
    uses_embedding = False
    host_only = True  # numpy and OpenCV on the host: frames may be swapped on several threads
    _lock = threading.Lock()  # a source's views are made once, whichever thread asks first

    def __init__(self, colour: bool = True) -> None:
        self.colour = colour
        warm_lab()  # while the models load

    def prepare(self, source: SourceFace) -> None:
        """The source photo's pose, mesh and skin maps, made when it is loaded (its mirror image's
        only when a turned target needs it)."""
        self._view(source, False)

    @classmethod
    def _view(cls, source: SourceFace, mirrored: bool) -> _SourceView:
        key = "morph_view_mirror" if mirrored else "morph_view"
        if key in source.cache:
            return source.cache[key]
        with cls._lock:
            if key in source.cache:
                return source.cache[key]
            if mirrored:
                img = np.ascontiguousarray(source.image[:, ::-1])
                face = mirror_face(source.face, source.image.shape[1])
            else:
                img, face = source.image, source.face
            source.cache[key] = _SourceView(img, face)
        return source.cache[key]

    def choose(self, target: Face, sources: Sequence[SourceFace]) -> tuple[SourceFace, bool, float]:
        """The source photo (and orientation) whose head turn best matches the target's, among
        those whose landmarks can be trusted. Returns it, whether mirrored, and the turn gap."""
        want = face_pose(target).yaw
        best = None
        for src in sources:
            view = self._view(src, False)
            for mirrored, turn in ((False, view.pose.yaw), (True, -view.pose.yaw)):
                gap = abs(turn - want)
                cost = gap + (MIRROR_PENALTY if mirrored else 0.0) + 60.0 * (1.0 - view.trust)
                if best is None or cost < best[0]:
                    best = (cost, src, mirrored, gap)
        assert best is not None
        return best[1], best[2], best[3]

    def swap(self, frame: np.ndarray, target: Face, sources: Sequence[SourceFace]) -> SwapResult:  # noqa: C901
        """Every decision is taken on a grid where the eyes are at most WORK_IOD pixels apart (cost
        per face is bounded whatever its size); the face itself is rendered at full resolution
        (an enlarged source's pixels at RENDER_DENSITY per source pixel, then enlarged)."""
        if target.landmarks is None:
            raise ValueError("the morph engine needs 106-point landmarks on the target")
        source, mirrored, yaw_gap = self.choose(target, sources)
        view = self._view(source, mirrored)
        pose_t = face_pose(target)
        scale = pose_t.scale  # pixels per eye distance
        lt = target.landmarks.astype(np.float64)
        shut_t = shut_eyes(lt, pose_t)
        shares = tuple(EYE_SHAPE_SHARE * (1.0 - max(a, b)) for a, b in zip(view.shut, shut_t))
        dst = destination(lt, pose_t, view.face.landmarks, view.pose, eye_shares=shares)

        # The region: every mesh vertex of the result and of the target.
        v_dst = mesh.place(dst, pose_t)
        v_tgt = mesh.place(lt, pose_t)
        pts = np.vstack([v_dst, v_tgt])
        h_img, w_img = frame.shape[:2]
        x0, y0 = np.floor(pts.min(0) - 0.05 * scale).astype(int)
        x1, y1 = np.ceil(pts.max(0) + 0.05 * scale).astype(int)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w_img, x1), min(h_img, y1)
        off = np.array([x0, y0], dtype=np.float64)
        h, w = y1 - y0, x1 - x0
        # The analysis grid: a coarser copy of the region for large faces.
        z = min(1.0, WORK_IOD / scale)
        hz, wz = max(2, int(round(h * z))), max(2, int(round(w * z)))
        zx, zy = wz / w, hz / h
        zoom = np.array([zx, zy])
        zs = scale * z  # pixels per eye distance on the grid

        r = rasterise((v_dst - off) * zoom, mesh.triangles(), (hz, wz), pose_t.depth(mesh.TEMPLATE))
        covered = r.covered
        region = r.per_triangle(mesh.regions(), -1)

        # Eyes that differ in being open or shut (or the source's hidden behind sunglasses) keep the
        # target's whole eye and lids.
        eye_keep = [1.0 if hid else float(np.clip((abs(a - b) - EYE_KEEP_FROM) / EYE_KEEP_RAMP, 0.0, 1.0))
                    for a, b, hid in zip(view.shut, shut_t, view.hidden)]
        # An open source mouth shows teeth right at its inner lip line: its lips are sampled further out.
        lips = LIP_INSET_OPEN if mouth_opening(view.face.landmarks) > OPEN_MOUTH else LIP_INSET
        verts_s = inset_openings(view.verts, (eye_keep[0] > 0.5, eye_keep[1] > 0.5), lips)
        px = _gather(r, verts_s, v_tgt, view.visibility)

        def sample(img, xy, interp=cv2.INTER_LINEAR):
            out = cv2.remap(img, xy[..., 0], xy[..., 1], interp, borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
            return out if img.dtype == np.uint8 else np.clip(out, 0.0, 255.0)  # uint8 results are in range

        # One smooth hand-over from the side the source shows to its mirror side: never patches.
        mirror_w = _blur(np.clip((px.vis_mir - px.vis - MIRROR_MARGIN) / MIRROR_RAMP, 0.0, 1.0), 0.08 * zs)
        mw = mirror_w[..., None]
        mirrored_any = bool(mirror_w.any())  # no mirror side anywhere (most faces): its samples are skipped
        src_small, frame_small = _for_grid(view.image, view.pose.scale, zs), _for_grid(frame, scale, zs, (x0, y0, x1, y1))
        src_img = sample(src_small.image, src_small.to(px.src))
        if mirrored_any:
            src_img = src_img * (1 - mw) + sample(src_small.image, src_small.to(px.mir)) * mw
        t_warp = sample(frame_small.image, frame_small.to(px.tgt))

        # What the source shows that is not skin where skin belongs (a fringe, frames, hair) is
        # painted over with its own nearby skin; below the nostrils only what is not
        # skin-coloured: a dark beard there is part of who the source is.
        expect = np.isin(region, (mesh.SKIN, mesh.FOREHEAD, mesh.OUTER))

        # The source's skin maps seen through the mesh, own and mirror side mixed.
        if view.maps is None:
            seen = np.ones((hz, wz, 3), np.float32)
        else:
            seen = view.maps.sample(px.src)
            if mirrored_any:
                seen = seen * (1 - mw) + view.maps.sample(px.mir) * mw
            seen = _blur(np.where(expect[..., None], seen, 1.0), 0.02 * zs)

        upper = _blur(px.uv[..., 1] < mesh.UV[80, 1], 0.04 * zs)
        replace = (1 - seen[..., 0]) * upper + (1 - seen[..., 1]) * (1 - upper)
        sure = seen[..., 2]
        inner = _blur(~np.isin(region, (mesh.FOREHEAD, mesh.OUTER)), 0.03 * zs)
        paint = fill = None
        if replace.max() > 0.05:
            clean = ((region == mesh.SKIN) & (sure > 0.97)).astype(np.uint8)
            k = max(3, int(0.08 * zs) | 1)
            clean = cv2.erode(clean, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
            fill = soft_mean(src_img, clean, max(2.0, INPAINT_SIGMA * zs), prior_weight=0.02)
            paint = (replace * inner)[..., None]
            src_img = src_img * (1 - paint) + fill * paint
        src_ok = 1.0 - replace * (1 - inner)  # at the edges the target shows instead

        # Where the target keeps its own pixels.
        mouth_open = mouth_opening(lt) > OPEN_MOUTH
        use_src = np.ones((hz, wz), np.float32)
        if mouth_open:
            use_src[region == mesh.MOUTH_IN] = 0.0
        use_src[region == mesh.OUTER] = 0.0  # the face's edge is the target's own skin
        soft = 0.012 * zs
        use_src = _blur(use_src, soft)
        for k, ring in enumerate(EYES):
            if eye_keep[k] > 0:
                use_src *= 1.0 - eye_keep[k] * periocular(px.uv, ring)
        # Mouths held differently keep the target's lips and mouth.
        mouth_keep = float(np.clip((mouth_difference(view.face.landmarks, lt) - MOUTH_KEEP_FROM) / MOUTH_KEEP_RAMP,
                                   0.0, 1.0))
        if mouth_keep > 0:
            lips_t = _blur(cv2.dilate(np.isin(region, (mesh.LIPS, mesh.MOUTH_IN)).astype(np.uint8),
                                      np.ones((3, 3), np.uint8)).astype(np.float32), 0.03 * zs)
            use_src *= 1.0 - mouth_keep * lips_t
        use_src *= src_ok
        # What the source cannot show honestly: both sides turned away, landmarks it cannot trust,
        # or a patch the source shows so small that it would be smeared over the target's (the
        # far cheek of a frontal source on a turned target).
        seen = np.clip((np.maximum(px.vis, px.vis_mir) - 0.2) / 0.25, 0.0, 1.0)
        grow_by = r.per_triangle(stretch(v_dst, verts_s, scale / view.pose.scale), 1.0)
        own = np.clip((STRETCH_MAX - grow_by) / (STRETCH_MAX - STRETCH_OK), 0.0, 1.0)
        use_src *= _blur(seen * np.maximum(own, mirror_w), 0.05 * zs) * view.trust

        # Light and colour, measured on the skin of both faces in the same geometry (leaving out
        # the target's own hair, beard, or whatever covers it). The source's shadowed skin counts
        # too, so the target's light replaces the source's shadows instead of keeping them.
        skin_w = (region == mesh.SKIN).astype(np.float32) * covered
        ws = skin_w * (1.0 - replace)
        wt = skin_w.copy()
        target_map = skin_map(frame, target, tol=COLOUR_TOL)
        if target_map is not None:
            wt *= target_map.sample(px.tgt)
        fields = colour_fields(to_lab(src_img), to_lab(t_warp), ws, wt, max(2.0, COLOUR_SIGMA * zs)) \
            if self.colour else None
        keep = np.clip(1.0 - px.top * covered, 0.0, 1.0).astype(np.float32)

        # The render, at full resolution: the grid's maps are smooth, so they are enlarged.
        def sized(a, hw):
            return a if a.shape[:2] == hw else cv2.resize(a, hw[::-1], interpolation=cv2.INTER_LINEAR)

        def full(a):
            return sized(a, (h, w))

        grow = cv2.INTER_CUBIC if scale > 1.3 * view.pose.scale else cv2.INTER_LINEAR  # smooth enlarging
        # The source's pixels: rendered at RENDER_DENSITY samples per source pixel when it is
        # enlarged more than that, then enlarged to full resolution.
        r = min(1.0, RENDER_DENSITY * view.pose.scale / scale)
        hr, wr = (h, w) if r > 0.85 else (max(2, int(round(h * r))), max(2, int(round(w * r))))

        def mid(a):
            return sized(a, (hr, wr))

        face_img = sample(view.image, mid(px.src), grow)
        if mirror_w.max() > 1e-3:
            m = mid(mirror_w)[..., None]
            face_img = face_img * (1 - m) + sample(view.image, mid(px.mir), grow) * m
        if paint is not None:
            p = mid(paint[..., 0])[..., None]
            face_img = face_img * (1 - p) + mid(fill) * p
        if fields is not None:
            face_img = np.clip(from_lab(fields.resized((wr, hr)).apply(to_lab(face_img))), 0.0, 255.0)
        if (hr, wr) != (h, w):
            face_img = np.clip(cv2.resize(face_img, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 255.0)
        t_full = sample(frame, full(px.tgt))
        use = full(use_src)[..., None]
        image = t_full + (face_img - t_full) * use
        up = scale / view.pose.scale  # how much the source is enlarged: enlarging softens
        if SHARPEN and up > 1.2:
            amount = np.float32(min(1.0, SHARPEN * float(np.log2(up))))
            image = image + (amount * use) * (image - cv2.GaussianBlur(image, (0, 0), float(0.5 * up)))
        seed = int(np.ascontiguousarray(frame[y0:y1:7, x0:x1:7]).sum()) & 0xFFFFFFFF
        image, grain = match_grain(image, t_full, full(ws), full(wt), seed)

        info = {"mirrored": mirrored, "source": str(source.path) if source.path else None,
                "mouth_open": bool(mouth_open), "pose_gap": round(float(yaw_gap), 1),
                "eyes_kept": [round(e, 2) for e in eye_keep], "mouth_kept": round(mouth_keep, 2), **grain}
        if yaw_gap > MAX_YAW_GAP or abs(view.pose.yaw) > MAX_SOURCE_YAW or view.trust < 1.0:
            info["pose_limited"] = (f"source turned {view.pose.yaw:+.0f}, target {pose_t.yaw:+.0f} deg"
                                    + ("; source landmarks unsure" if view.trust < 1.0 else ""))
        return SwapResult(roi=(x0, y0, x1, y1), image=image.astype(np.float32), keep=full(keep),
                          landmarks=(dst - off).astype(np.float32), info=info)
