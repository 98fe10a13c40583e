"""The GHOST landmark-adaptive mask: offset rule, parameter classes, and what
they do to the mask."""

from __future__ import annotations

import numpy as np

from swapcli.blend.ghost_mask import (
    GHOST_224,
    MaskParams,
    crop_scale,
    ghost_mask,
    lift_brows,
    outline_offset,
    params_for,
)
from swapcli.analyse.face import BROWS


def _landmarks(analyser, photos):
    from swapcli.read.image import read_image

    image = read_image(photos["yaoming"]).bgr
    face = analyser.detect(image)[0]
    return image, face, analyser.landmarks(image, face)


def test_offset_sign_follows_outline(analyser, photos):
    _, face, lmk = _landmarks(analyser, photos)
    centre = lmk.mean(0)
    narrower = centre + (lmk - centre) * np.array([0.9, 1.0])
    wider = centre + (lmk - centre) * np.array([1.1, 1.0])
    assert outline_offset(lmk, lmk) == 0
    assert outline_offset(narrower, lmk) > 3
    assert outline_offset(wider, lmk) < -3
    # Expressed in 224-crop pixels: doubling the frame size doubles raw offsets, not scaled ones.
    s1 = crop_scale(face.kps)
    s2 = crop_scale(face.kps * 2)
    assert abs(s1 / s2 - 2.0) < 1e-6
    assert abs(outline_offset(narrower, lmk, s1) - outline_offset(narrower * 2, lmk * 2, s2)) < 1e-6


def test_param_classes():
    assert params_for(7) == MaskParams(15, 15.0, 10.0, 2.7)
    assert params_for(4) == MaskParams(10, 10.0, 8.0, 2.0)
    assert params_for(0) == MaskParams(5, 5.0, 5.0, 2.0)
    assert params_for(-4) == MaskParams(-5, 5.0, 10.0, 0.5)


def test_mask_grows_and_shrinks_with_offset(analyser, photos):
    image, face, lmk = _landmarks(analyser, photos)
    scale = crop_scale(face.kps)
    shape = image.shape[:2]
    eye_line = int(face.kps[:2, 1].max())  # below it only erosion/dilation acts (no brow lift)
    areas = {}
    for offset in (7, 4, 0, -4):
        m = ghost_mask(lmk, params_for(offset), shape, scale)
        assert m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
        areas[offset] = float((m[eye_line:] > 0.5).sum())
    # Narrower swapped outline -> smaller (eroded) mask; wider -> dilated, larger.
    assert areas[7] < areas[4] < areas[0] < areas[-4]


def test_mask_border_is_zero_and_feathered(analyser, photos):
    image, face, lmk = _landmarks(analyser, photos)
    scale = crop_scale(face.kps)
    params = params_for(0)
    m = ghost_mask(lmk, params, image.shape[:2], scale)
    border = int(2 * params.sigma_y / scale)
    assert m[:max(1, border // 2)].max() < 0.05
    inner = m[(m > 0.02) & (m < 0.98)]
    assert inner.size > 0  # a soft edge, not a hard cut


def test_brow_lift_moves_brows_away_from_eyes(analyser, photos):
    _, _, lmk = _landmarks(analyser, photos)
    lifted = lift_brows(lmk, 2.0)
    moved = np.linalg.norm(lifted - lmk, axis=1) > 1e-6
    assert moved[BROWS].sum() == 10 and moved.sum() == 10
    assert (lifted[moved][:, 1] < lmk[moved][:, 1]).all()  # upward in an upright face


def test_template_constant():
    assert GHOST_224.shape == (5, 2) and abs(GHOST_224[1, 0] - GHOST_224[0, 0] - 65.08) < 0.01
