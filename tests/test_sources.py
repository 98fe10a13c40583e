"""Several photos of the source person: the embedded engine picks, per target
face, the photo (or mirror image) whose head turn matches best."""

from __future__ import annotations

import json

import cv2
import numpy as np

from conftest import run_cli
from swapcli.analyse.pose import yaw_sign
from swapcli.read.image import read_image
from swapcli.swap.base import SourceFace
from swapcli.swap.morph import MorphEngine


def test_engine_picks_the_source_whose_turn_matches(photos, analyser):
    t1 = read_image(photos["t1"]).bgr
    faces = analyser.detect(t1)
    turned = max(faces, key=lambda f: abs(yaw_sign(f.kps)))  # a strongly turned face
    frontal = min(faces, key=lambda f: abs(yaw_sign(f.kps)))
    candidates = []
    for face in (turned, frontal):
        analyser.landmarks(t1, face)
        candidates.append(SourceFace(t1, face))
    engine = MorphEngine()
    # For a target turned like `turned`, that photo itself wins, unmirrored, with no turn gap.
    chosen, mirrored, gap = engine.choose(turned, candidates)
    assert chosen is candidates[0] and not mirrored and gap < 1.0
    # For a target turned the other way (the same face seen in a mirror), the same photo wins mirrored.
    from swapcli.analyse.face import mirror_face

    other_way = mirror_face(turned, t1.shape[1])
    chosen, mirrored, gap = engine.choose(other_way, candidates)
    assert chosen is candidates[0] and mirrored and gap < 1.0
    # For a frontal target, the frontal photo wins.
    chosen, _, _ = engine.choose(frontal, candidates)
    assert chosen is candidates[1]


def test_cli_accepts_several_sources(photos, tmp_path):
    gdp = cv2.imread(str(photos["gdp"]))
    flipped = tmp_path / "gdp_flipped.jpg"
    cv2.imwrite(str(flipped), np.ascontiguousarray(gdp[:, ::-1]))
    out = tmp_path / "multi.jpg"
    proc = run_cli("image", photos["gdp"], photos["t1"], "-s", flipped, "-o", out, "--faces", "all", "--json")
    assert proc.returncode == 0, proc.stderr
    used = {face["source"] for face in json.loads(proc.stdout)["faces"]}
    assert used <= {str(photos["gdp"]), str(flipped)} and used
