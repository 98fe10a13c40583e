"""Identity moves to the source and the target's pose stays, over all ordered
pairs of different people (faces >= 60 px) in the packaged photos.

The embedded engine keeps the target's outline, forehead, hair and expression (and the target's
own eyes and lips where the two faces hold them differently), so on these small faces (60-110 px,
where the outline weighs much) the identity measured by the packaged MobileFaceNet moves less than
with a neural engine: measured 0.34 to the source against 0.31 to the target, the source the
nearest identity for 96 % of pairs (on larger faces, benchmarks/quality_pairs.py: 0.42 against
0.29, 91 %). The bounds below guard that level: the source must stay the nearest identity."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import iou
from swapcli.analyse.face import cosine
from swapcli.analyse.pose import head_pose
from swapcli.read.image import read_image
from swapcli.swap.base import SourceFace


@pytest.fixture(scope="module")
def people(photos, swapper):
    found = []
    for name in ("yaoming", "gdp", "t1"):
        image = read_image(photos[name]).bgr
        for face in swapper.detect(image):
            if face.size >= 60:
                swapper.landmarks(image, face)
                swapper.embed(image, face)
                found.append((image, face))
    assert len(found) >= 8
    return found


@pytest.mark.slow
def test_identity_moves_to_source(people, swapper):
    to_src, to_tgt, nearest, yaw_err, roll_err = [], [], [], [], []
    for i, (s_img, s_face) in enumerate(people):
        source = SourceFace(s_img, s_face)
        for j, (t_img, t_face) in enumerate(people):
            if i == j:
                continue
            out = t_img.copy()
            swapper.swap_face(out, t_face, [source])
            hits = [f for f in swapper.detect(out) if iou(f.bbox, t_face.bbox) > 0.4]
            assert hits, f"swapped face {i}->{j} not re-detected"
            got = max(hits, key=lambda f: iou(f.bbox, t_face.bbox))
            emb = swapper.embed(out, got)
            to_src.append(cosine(emb, s_face.embedding))
            to_tgt.append(cosine(emb, t_face.embedding))
            others = [k for k in range(len(people)) if k != j]
            sims = [cosine(emb, people[k][1].embedding) for k in others]
            nearest.append(others[int(np.argmax(sims))] == i)
            p_t, p_r = head_pose(t_face.kps), head_pose(got.kps)
            yaw_err.append(abs(p_t.yaw - p_r.yaw))
            roll_err.append(abs(p_t.roll - p_r.roll))
    to_src, to_tgt = np.array(to_src), np.array(to_tgt)
    print(f"pairs={len(to_src)} cos_src={to_src.mean():.3f} cos_tgt={to_tgt.mean():.3f} "
          f"nearest={np.mean(nearest):.2f} yaw_median={np.median(yaw_err):.1f} roll_mean={np.mean(roll_err):.1f}")
    assert to_src.mean() >= 0.33
    assert to_src.mean() - to_tgt.mean() >= 0.02
    assert np.mean(nearest) >= 0.85
    assert np.mean(roll_err) < 4.0
    assert np.median(yaw_err) < 8.0
