"""What covers the target's face, estimated offline: the blend keeps the target there.

No occluder model ships in any package this tool can install, so the estimate comes from the face
itself: where the face's mesh says skin should be (cheeks, nose, chin, forehead, temples) but the
photo shows something that is not this face's skin (a microphone, a mask, a hand in a glove, hair
strands, a beard, glasses frames), the target's own pixels stay in front. Small gaps across the
eyes, brows and lips are closed, so an occluder that crosses a feature stays whole. Every engine
gets the same estimate through swapcli.blend.paste.

The skin colour is learned from the cheeks and nose, exactly what a face mask or a scarf covers:
analyse/skin.py checks them against the skin under the eyes and on the nose bridge and, when
something covers them, learns the skin around it; then the covered face is also judged on
lightness and on being more like the covering than like the skin (covered_zone_map), so a black or
white mask in a photo with little colour is found too.
"""

from __future__ import annotations

import cv2
import numpy as np

from swapcli.analyse import mesh
from swapcli.analyse.face import Face
from swapcli.analyse.skin import covered_zone_map, skin_map

# Where skin is expected on every face (features and their dark rims are judged by their
# neighbours; outside the outline is background, which no blend reaches).
EXPECT_SKIN = (mesh.SKIN, mesh.FOREHEAD)
EDGE = 0.08  # the face's own edge (eye distances) is left to the blend's feather
CLOSE = 0.12  # gaps narrower than this (eye distances) inside an occluder are closed
MIN_AREA = 0.04  # occluded blobs smaller than this (eye distances squared) are noise
REACH = 0.25  # how far (eye distances) an occluder is followed across features
GROW = 0.04  # occluders are grown by this (eye distances) before their edge is feathered
COLOUR_TOL = 1.3  # colour tolerance of the skin test (tighter than for sources: an object that is
# merely off-colour, a grey microphone, a blue mask, counts as covering)


def occlusion(frame: np.ndarray, face: Face, roi: tuple[int, int, int, int]) -> np.ndarray | None:
    """Float32 ROI-sized map: 1 where something covers the target face, 0 where its skin shows.

    Judged on the face's patch (analyse.skin.face_patch: eyes at most WORK_IOD pixels apart, its
    mesh already rasterised there, where the skin maps live), then moved into the ROI and
    enlarged. None when the face has no measurable skin (then nothing is kept).
    """
    if face.landmarks is None:
        return None
    sm = skin_map(frame, face, tol=COLOUR_TOL)
    if sm is None:
        return None
    patch = sm.patch
    r, pose = patch.raster, patch.pose
    scale = pose.scale * patch.factor  # patch pixels per eye distance
    region = r.per_triangle(mesh.regions(), -1)
    expect = (np.isin(region, EXPECT_SKIN) & (r.gather(pose.visibility()) > 0.2)).astype(np.uint8)
    e = max(3, int(round(EDGE * scale)) | 1)
    expect = cv2.erode(expect, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (e, e))) > 0
    skin = sm.values
    zm = covered_zone_map(frame, face)  # the sure-skin zone was covered: judged stricter as well
    if zm is not None:
        skin = np.minimum(skin, zm.values)
    not_skin = (1.0 - skin) > 0.5
    hard = (not_skin & expect).astype(np.uint8)
    k = max(3, int(round(CLOSE * scale)) | 1)
    hard = cv2.morphologyEx(hard, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < MIN_AREA * scale ** 2
    small[0] = True
    hard[small[labels]] = 0
    if not hard.any():
        return None
    # An occluder found on the skin continues over the features next to it (it covers an eye, a
    # lip, a nostril as well): grown through the face's other non-skin pixels, a short way.
    inside = (r.covered & not_skin).astype(np.uint8)
    step = np.ones((3, 3), np.uint8)
    for _ in range(max(1, int(round(REACH * scale)))):
        grown = cv2.dilate(hard, step) & (inside | hard)
        if np.array_equal(grown, hard):
            break
        hard = grown
    # Grown a little before feathering, so the object's own edge stays in front too.
    g = max(3, int(round(GROW * scale)) | 1)
    hard = cv2.dilate(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (g, g)))
    soft = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), max(0.7, 0.015 * scale))
    # ROI pixel (u, v) is image pixel (x0 + u, y0 + v), which the patch shows at to_patch of it.
    x0, y0, x1, y1 = roi
    f = patch.factor
    (px, py), = patch.to_patch(np.array([[x0, y0]], np.float32))
    m = np.array([[f, 0.0, px], [0.0, f, py]], np.float64)
    return cv2.warpAffine(soft, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
