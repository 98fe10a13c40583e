"""The embedded default engine: a 3D-mesh face transplant that needs no downloaded weights.

A face swap changes who the face is and nothing else. So:
- Geometry is the target's: its outline, head pose, expression (eye openness, gaze, mouth opening,
  smile); only the layout that makes a person recognisable (where the eyes, brows, nose and mouth
  sit, how big they are) moves towards the source's, measured in a frontal view.
- Texture is the source's skin and features, carried onto the target through one mesh (swap.mesh)
  rasterised in the target's pose. A turned source fills the half it hides from its mirror image;
  parts of the source that are not face (a fringe, glasses frames, a hand) are replaced by the
  mirror side when that is clean, else by the target's own skin.
- The target's own eye openings and (when open) mouth are kept: gaze, teeth and tongue are the
  target's. Everything above the brows stays the target's (hair, hairline, forehead).
- Light, colour, sharpness and grain are the target photo's (swap.appearance).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from swapcli.analyse.face import Face, mirror_face, mouth_opening
from swapcli.analyse.skin import DARK_LIMIT_STRICT, face_pose, face_skin, from_lab, skin_map, to_lab
from swapcli.analyse import mesh
from swapcli.core.geometry import soft_mean
from swapcli.swap.appearance import fit_lighting, match_grain, shading, transfer_colour
from swapcli.swap.base import SourceFace, SwapResult
from swapcli.core.raster import rasterise

OPEN_MOUTH = 0.08  # inner-lip gap / mouth width above which the target's mouth inside is kept
LIP_INSET, LIP_INSET_OPEN = 0.2, 0.6  # lips are sampled this far from the inner lip line (closed / open)
COLOUR_SIGMA = 0.4  # local light window, in eye distances
MIRROR_MARGIN = 0.15  # the mirror side is used where it faces the camera this much better
MIRROR_RAMP = 0.3
EYE_CLOSED, EYE_OPEN = 0.17, 0.27
EYE_SHAPE_SHARE = 0.5  # open eyes: how far their height moves towards the source's  # lid opening / eye width of a shut and of an open eye (frontal)
INPAINT = 1
INPAINT_SIGMA = 0.25
USE_VALIDITY = 1
USE_COLOUR = 1
RELIGHT = 1
USE_SEEN = 1
FOREHEAD_REACH = 0.0
USE_GRAIN = 1
MIRROR_PENALTY = 8.0  # degrees: a mirror image is chosen only when it matches the turn clearly better
MAX_YAW_GAP = 45.0  # degrees of turn between source and target beyond which the result is limited
MAX_SOURCE_YAW = 55.0  # a source turned further than this shows too little of its face
MISFIT_OK, MISFIT_BAD = 0.04, 0.065  # landmark misfit to the rigid head (eye distances): trusted .. not
LAYOUT_STRENGTH = 0.5
FEATURE_SCALE = 0.0  # how far eye and mouth sizes move to the source's (their shapes stay the target's)  # how far the feature layout moves to the source's (0 = target's, 1 = source's)


def _group_move(ft: np.ndarray, fs: np.ndarray, idx: np.ndarray, anchor: np.ndarray, width: tuple[int, int],
                scale_share: float, limits: tuple[float, float]) -> np.ndarray:
    """Target's shape of a feature, moved to the source's place and resized towards its size."""
    at, as_ = ft[anchor].mean(0), fs[anchor].mean(0)
    wt = np.linalg.norm(ft[width[0]] - ft[width[1]]) + 1e-9
    ws = np.linalg.norm(fs[width[0]] - fs[width[1]])
    k = 1.0 + scale_share * (np.clip(ws / wt, *limits) - 1.0)
    return as_ + (ft[idx] - at) * k


def destination(lt: np.ndarray, pose_t: mesh.HeadPose, ls: np.ndarray, pose_s: mesh.HeadPose,
                strength: float | None = None, eye_shares: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Where the result's 106 landmarks go (image pixels).

    Worked out in the frontal view: eyes keep the target's shape (openness, gaze) at the source's
    place and width; brows and nose are the source's; the mouth keeps the target's shape (opening,
    smile) at the source's place, half-way to the source's width; the outline is the target's.
    The displacement is then turned into the target's pose.
    """
    ft = mesh.frontal(lt, pose_t)
    fs = mesh.frontal(ls, pose_s)
    new = ft.copy()
    for ring, pupil in ((mesh.LEFT_EYE_RING, 34), (mesh.RIGHT_EYE_RING, 88)):
        idx = np.r_[ring, pupil, 38 if pupil == 34 else 92]
        new[idx] = _group_move(ft, fs, idx, ring, (int(ring[0]), int(ring[4])), FEATURE_SCALE, (0.8, 1.25))
    for brow in (mesh.LEFT_BROW, mesh.RIGHT_BROW):
        new[brow] = fs[brow]
    # The nose: the source's length and width, but in a turned face its tip is the outline, and
    # the outline stays the target's.
    side = np.clip(1.0 - abs(pose_t.yaw) / 35.0, 0.0, 1.0)
    new[mesh.NOSE, 1] = fs[mesh.NOSE, 1]
    new[mesh.NOSE, 0] = ft[mesh.NOSE, 0] + side * (fs[mesh.NOSE, 0] - ft[mesh.NOSE, 0])
    mouth = np.arange(52, 72)
    new[mouth] = _group_move(ft, fs, mouth, np.array([52, 61]), (52, 61), 0.5 * FEATURE_SCALE, (0.8, 1.25))
    # Keep the mouth clear of the chin and the brows clear of the eyes.
    chin_gap = ft[0, 1] - ft[53, 1]
    if new[53, 1] > ft[0, 1] - 0.6 * chin_gap:
        new[mouth, 1] -= new[53, 1] - (ft[0, 1] - 0.6 * chin_gap)
    delta = (LAYOUT_STRENGTH if strength is None else strength) * (new - ft)
    # Open eyes: their height moves `eye_shares` of the way to the source's (a round eye forced
    # into a narrow one, or the reverse, is who someone is, not an expression).
    for ring, share in zip((mesh.LEFT_EYE_RING, mesh.RIGHT_EYE_RING), eye_shares):
        if share <= 0:
            continue
        ratio = np.clip(eye_openness(ls, ring) / max(eye_openness(lt, ring), 1e-3), 0.5, 2.0) ** share
        a, b = ft[ring[0]], ft[ring[4]]
        axis = (b - a) / (np.linalg.norm(b - a) + 1e-9)
        normal = np.array([-axis[1], axis[0]])
        off = (ft[ring] - a) @ normal
        delta[ring] += np.outer(off * (ratio - 1.0), normal)
    delta[mesh.CONTOUR_PATH] = 0.0
    return np.asarray(lt, dtype=np.float64) + mesh.to_image_delta(delta, pose_t)


def inset_openings(verts: np.ndarray, eyes: tuple[bool, bool] = (True, True), lips: float = 0.2) -> np.ndarray:
    """Pull the source's inner lip line (and the rims of the eyes whose opening is not taken from
    the source) away from the openings, so sampling its lips and lids never picks up its teeth
    or the whites of its eyes."""
    v = verts.copy()
    outer_for_inner = {65: 64, 66: 63, 62: 71, 70: 67, 69: 68, 57: 59, 60: 53, 54: 56}
    for i, o in outer_for_inner.items():
        v[i] = v[i] + lips * (v[o] - v[i])
    for ring, inset in ((mesh.LEFT_EYE_RING, eyes[0]), (mesh.RIGHT_EYE_RING, eyes[1])):
        if inset:
            # Away from the eye's centre line by a share of its width, so even a closed eye's lids
            # are sampled on skin above and below the lashes, not on the lash line.
            p = v[ring]
            axis = p[4] - p[0]
            width = np.linalg.norm(axis) + 1e-9
            down = np.array([-axis[1], axis[0]]) / width
            c = p.mean(0)
            side = np.sign((p - c) @ down)
            v[ring] = c + (p - c) * 1.08 + np.outer(side, down) * np.where(side < 0, 0.10, 0.07)[:, None] * width
    return v


def closedness(openness: float) -> float:
    """0 for an open eye, 1 for a closed one, in between for a squint or a downward look.
    Openness within the open range (narrow or round eyes) is who someone is, not expression."""
    return float(np.clip((EYE_OPEN - openness) / (EYE_OPEN - EYE_CLOSED), 0.0, 1.0))


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


def eye_openness(lmk: np.ndarray, ring: np.ndarray) -> float:
    """Lid opening of one eye as a share of its width (corner to corner)."""
    p = np.asarray(lmk, dtype=np.float64)[ring]
    axis = p[4] - p[0]
    width = np.linalg.norm(axis) + 1e-9
    normal = np.array([-axis[1], axis[0]]) / width
    return float(np.ptp(p @ normal) / width)


class _SourceView:
    """One source photo (or its mirror image) prepared for transplanting: pose, mesh, skin."""

    def __init__(self, image: np.ndarray, face: Face) -> None:
        self.image = image
        self.face = face
        self.pose = mesh.fit_pose(face.landmarks)
        self.verts = mesh.place(face.landmarks, self.pose)
        self.eye_open = tuple(eye_openness(face.landmarks, r) for r in (mesh.LEFT_EYE_RING, mesh.RIGHT_EYE_RING))
        self.visibility = self.pose.visibility()
        # How far the 106 points stray from any rigid head: near profiles and extreme expressions
        # give landmarks the mesh cannot trust.
        fit = self.pose.project(mesh.TEMPLATE[mesh.RIGID]) - np.asarray(face.landmarks, np.float64)[mesh.RIGID]
        self.misfit = float(np.abs(fit).mean() / self.pose.scale)
        self.trust = float(np.clip((MISFIT_BAD - self.misfit) / (MISFIT_BAD - MISFIT_OK), 0.0, 1.0))
        self.skin = face_skin(image, face)
        self.valid = skin_map(image, face)  # what to replace: plainly not skin
        self.valid_colour = skin_map(image, face, float("inf"))  # ... by colour alone (not a dark beard)
        self.clean = skin_map(image, face, DARK_LIMIT_STRICT)  # what to measure light on: surely skin

def _lightness(bgr: np.ndarray) -> np.ndarray:
    return to_lab(bgr)[..., 0]


class MorphEngine:
    """Embedded default: no downloaded weights, runs anywhere."""

    name = "morph"
    uses_embedding = False

    def __init__(self, colour: bool = True) -> None:
        self.colour = colour

    @staticmethod
    def _relight(src_img, s_own, t_warp, r, view: "_SourceView", pose_t, mirror_w, ws, wt) -> np.ndarray:
        """Take the source's light off and put the target's on, using the generic 3D face's
        normals: a side-lit source on a front-lit target is lit from the front (its own
        deviations from the generic shape, deep-set eyes or a strong jaw, keep their shading)."""
        normals = r.gather(mesh.vertex_normals())
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-6
        n_src = normals @ view.pose.rot.T
        n_mir = (normals * np.array([-1.0, 1.0, 1.0], np.float32)) @ view.pose.rot.T
        n_tgt = normals @ pose_t.rot.T
        vis_s = -n_src[..., 2]
        c_s = fit_lighting(_lightness(s_own), n_src, ws * (vis_s > 0.3))
        c_t = fit_lighting(_lightness(t_warp), n_tgt, wt * (-n_tgt[..., 2] > 0.3))
        if c_s is None or c_t is None:
            return src_img
        shade_s = shading(n_src, c_s) * (1 - mirror_w) + shading(n_mir, c_s) * mirror_w
        ratio = np.clip(shading(n_tgt, c_t) / np.maximum(shade_s, 5.0), 0.4, 2.5)
        lab = to_lab(src_img)
        lab[..., 0] *= ratio
        return np.clip(from_lab(lab), 0.0, 255.0)

    @staticmethod
    def _view(source: SourceFace, mirrored: bool) -> _SourceView:
        key = "morph_view_mirror" if mirrored else "morph_view"
        if key not in source.cache:
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
            turn = view.pose.yaw
            for mirrored, value in ((False, turn), (True, -turn)):
                gap = abs(value - want)
                cost = gap + (MIRROR_PENALTY if mirrored else 0.0) + 60.0 * (1.0 - view.trust)
                if best is None or cost < best[0]:
                    best = (cost, src, mirrored, gap)
        assert best is not None
        return best[1], best[2], best[3]

    def swap(self, frame: np.ndarray, target: Face, sources: Sequence[SourceFace]) -> SwapResult:
        if target.landmarks is None:
            raise ValueError("the morph engine needs 106-point landmarks on the target")
        source, mirrored, yaw_gap = self.choose(target, sources)
        view = self._view(source, mirrored)
        pose_t = face_pose(target)
        lt = target.landmarks.astype(np.float64)
        turn_t = np.cos(np.radians(min(abs(pose_t.yaw), 60.0)))
        turn_s = np.cos(np.radians(min(abs(view.pose.yaw), 60.0)))
        shut_t = [closedness(eye_openness(lt, ring) * turn_t) for ring in (mesh.LEFT_EYE_RING, mesh.RIGHT_EYE_RING)]
        shut_s = [closedness(o * turn_s) for o in view.eye_open]
        shares = tuple(EYE_SHAPE_SHARE * (1.0 - max(a, b)) for a, b in zip(shut_s, shut_t))
        dst = destination(lt, pose_t, view.face.landmarks, view.pose, eye_shares=shares)

        v_dst = mesh.place(dst, pose_t)
        v_tgt = mesh.place(lt, pose_t)
        h_img, w_img = frame.shape[:2]
        box_pts = np.vstack([v_dst, v_tgt])
        pad = 0.05 * pose_t.scale
        x0, y0 = np.floor(box_pts.min(0) - pad).astype(int)
        x1, y1 = np.ceil(box_pts.max(0) + pad).astype(int)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w_img, x1), min(h_img, y1)
        off = np.array([x0, y0], dtype=np.float64)
        h, w = y1 - y0, x1 - x0

        r = rasterise(v_dst - off, mesh.triangles(), (h, w), pose_t.depth(mesh.TEMPLATE))
        covered = r.covered
        region = r.per_triangle(mesh.regions(), -1)

        # Eyes: where the source's eye is open about as wide as the target's, the source's whole eye
        # is used (its iris follows the target's pupil point, so the gaze stays the target's);
        # where they differ (a squint, a blink, a downward look), the target's eye and lids stay.
        eye_keep = tuple(abs(a - b) for a, b in zip(shut_s, shut_t))
        # An open source mouth shows teeth right at its inner lip line: sample its lips further out.
        lips = LIP_INSET_OPEN if mouth_opening(view.face.landmarks) > OPEN_MOUTH else LIP_INSET
        verts_s = inset_openings(view.verts, (eye_keep[0] > 0.5, eye_keep[1] > 0.5), lips)
        # Where each pixel comes from: the source, the source's mirror side, the target.
        src_xy = r.gather(verts_s)
        mir_xy = r.gather(verts_s[mesh.MIRROR_VERTS])
        tgt_xy = r.gather(v_tgt)
        vis = r.gather(view.visibility)
        vis_m = r.gather(view.visibility[mesh.MIRROR_VERTS])
        mirror_w = np.clip((vis_m - vis - MIRROR_MARGIN) / MIRROR_RAMP, 0.0, 1.0)

        def sample(img, xy, interp=cv2.INTER_LINEAR):
            return cv2.remap(img, xy[..., 0], xy[..., 1], interp, borderMode=cv2.BORDER_REFLECT101).astype(np.float32)

        # A source smaller than the target is enlarged: bicubic keeps edges smooth, not stepped.
        grow = cv2.INTER_CUBIC if pose_t.scale > 1.3 * view.pose.scale else cv2.INTER_LINEAR

        s_own = np.clip(sample(view.image, src_xy, grow), 0, 255)
        s_mir = np.clip(sample(view.image, mir_xy, grow), 0, 255)
        t_warp = sample(frame, tgt_xy)

        # Source pixels that are not skin where skin is expected: hair, a fringe, glasses frames,
        # a beard. All of them stay out of the light and colour measures. Above the nostrils
        # (fringes, frames, stray strands) they are replaced: by the mirror side when a turned
        # source shows it, else by the source's own skin nearby. A beard below stays: it is part of
        # who the source is.
        expect_skin = np.isin(region, (mesh.SKIN, mesh.FOREHEAD, mesh.OUTER))
        # One smooth hand-over from the seen side to the mirror side: never patches.
        mirror_w = cv2.GaussianBlur(mirror_w.astype(np.float32), (0, 0), max(1.0, 0.08 * pose_t.scale))
        src_img = s_own * (1 - mirror_w[..., None]) + s_mir * mirror_w[..., None]

        def judged(skin):  # a source skin map seen through the mesh (own and mirror side mixed)
            if skin is None or not USE_VALIDITY:
                return np.ones((h, w), np.float32)
            ok = np.where(expect_skin, skin.sample(src_xy), 1.0) * (1 - mirror_w) + \
                np.where(expect_skin, skin.sample(mir_xy), 1.0) * mirror_w
            return cv2.GaussianBlur(ok.astype(np.float32), (0, 0), max(1.0, 0.02 * pose_t.scale))

        src_clean = judged(view.valid)
        src_sure = judged(view.clean)
        upper = r.gather(mesh.TEMPLATE[:, 1]) < mesh.TEMPLATE[80, 1]
        upper = cv2.GaussianBlur(upper.astype(np.float32), (0, 0), max(1.0, 0.04 * pose_t.scale))
        # Below the nostrils only what is not skin-coloured (hair strands, a collar, a hand in a
        # glove) is replaced; a dark beard there is kept.
        replace = (1 - src_clean) * upper + (1 - judged(view.valid_colour)) * (1 - upper)
        src_ok = 1.0 - replace
        if INPAINT and replace.max() > 0.05:
            clean = ((region == mesh.SKIN) & (src_sure > 0.97)).astype(np.uint8)
            k = max(3, int(0.08 * pose_t.scale) | 1)
            clean = cv2.erode(clean, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
            fill = soft_mean(src_img, clean, max(2.0, INPAINT_SIGMA * pose_t.scale), prior_weight=0.02)
            inner = (~np.isin(region, (mesh.FOREHEAD, mesh.OUTER))).astype(np.float32)
            inner = cv2.GaussianBlur(inner, (0, 0), max(1.0, 0.03 * pose_t.scale))
            src_img = src_img * (1 - replace[..., None] * inner[..., None]) + fill * (replace * inner)[..., None]
            src_ok = 1.0 - replace * (1 - inner)

        # The target keeps its eye openings, and its mouth's inside when open.
        mouth_open = mouth_opening(lt) > OPEN_MOUTH
        use_src = np.ones((h, w), np.float32)
        if mouth_open:
            use_src[region == mesh.MOUTH_IN] = 0.0
        use_src[region == mesh.OUTER] = 0.0  # the face's edge is the target's own skin
        soft = max(0.8, 0.012 * pose_t.scale)
        use_src = cv2.GaussianBlur(use_src, (0, 0), soft)
        uv = r.gather(mesh.UV)
        eye_side = uv[..., 0] < 0
        for k, ring in enumerate((mesh.LEFT_EYE_RING, mesh.RIGHT_EYE_RING)):
            if eye_keep[k] <= 0:
                continue
            if shut_s[k] > shut_t[k]:
                # A closed or squinting source eye has no open lids to give: the target keeps its
                # whole eye with the lids around it.
                keep_here = periocular(uv, ring)
            else:
                # An open source eye over a narrower target eye: the source's lids, the target's
                # opening (lid line, iris and gaze).
                inside = (region == mesh.EYE) & (eye_side if k == 0 else ~eye_side)
                keep_here = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), soft)
            use_src *= 1.0 - eye_keep[k] * keep_here
        use_src *= src_ok
        # What the source photo cannot show honestly (both sides turned away, landmarks it cannot
        # trust) stays the target's.
        if USE_SEEN:
            seen = np.clip((np.maximum(vis, vis_m) - 0.2) / 0.25, 0.0, 1.0)
            use_src *= cv2.GaussianBlur(seen.astype(np.float32), (0, 0), max(1.0, 0.05 * pose_t.scale)) * view.trust

        # Light and colour measured on skin of both faces, in the same geometry (the target's own
        # hair, beard or whatever covers it is left out of its measure).
        skin_w = (region == mesh.SKIN).astype(np.float32) * covered
        ws = skin_w * src_sure
        wt = skin_w.copy()
        target_map = skin_map(frame, target)
        if target_map is not None:
            wt *= target_map.sample(tgt_xy)
        if self.colour and RELIGHT:
            src_img = self._relight(src_img, s_own, t_warp, r, view, pose_t, mirror_w, ws, wt)
        if self.colour and USE_COLOUR:
            src_img = transfer_colour(src_img, t_warp, ws, wt, max(2.0, COLOUR_SIGMA * pose_t.scale))

        self.debug = {"mirror_w": mirror_w, "src_ok": src_ok, "use_src": use_src, "ok_own": src_clean,
                      "expect": expect_skin.astype(np.float32), "src_img": src_img}
        image = src_img * use_src[..., None] + t_warp * (1 - use_src[..., None])
        grain = {}
        if USE_GRAIN:
            image, grain = match_grain(image, t_warp, ws, wt)

        # Above the brows the target stays itself (hair, hairline, forehead).
        top = np.ones(mesh.N_VERTS, np.float32)
        top[mesh.FOREHEAD_VERTS] = 0.0
        if FOREHEAD_REACH > 0:
            top[mesh.FOREHEAD_ROW1] = FOREHEAD_REACH
        keep = 1.0 - r.gather(top) * covered
        keep = np.clip(keep, 0.0, 1.0).astype(np.float32)

        info = {"mirrored": mirrored, "source": str(source.path) if source.path else None,
                "mouth_open": bool(mouth_open), "pose_gap": round(float(yaw_gap), 1),
                "eyes_kept": [round(e, 2) for e in eye_keep], **grain}
        if yaw_gap > MAX_YAW_GAP or abs(view.pose.yaw) > MAX_SOURCE_YAW or view.trust < 1.0:
            info["pose_limited"] = (f"source turned {view.pose.yaw:+.0f} deg, target {pose_t.yaw:+.0f} deg"
                                    + ("; source landmarks unreliable" if view.trust < 1.0 else ""))
        return SwapResult(roi=(x0, y0, x1, y1), image=image.astype(np.float32), keep=keep,
                          landmarks=(dst - off).astype(np.float32), info=info)
