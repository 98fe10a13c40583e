"""GHOST end to end on checkpoints in the published layout (random weights: real
compute, no quality claim), and refusal of checkpoints that carry code."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

from conftest import PHOTOS, assert_clean_failure, run_cli

ENV = {"SWAPCLI_WEIGHTS": "", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def random_ghost(tmp_path_factory):
    import torch

    from swapcli.swap.nets.aei import AEINet
    from swapcli.swap.nets.iresnet import iresnet100

    d = tmp_path_factory.mktemp("ghost")
    torch.manual_seed(0)
    torch.save(AEINet(num_blocks=2).state_dict(), d / "G_unet_2blocks.pth")
    torch.save(iresnet100().state_dict(), d / "backbone.pth")
    return d


@pytest.mark.slow
def test_ghost_engine_runs_end_to_end_on_published_layout(tmp_path, random_ghost, analyser):
    out = tmp_path / "out.png"
    proc = run_cli("image", PHOTOS["gdp"], PHOTOS["yaoming"], "-o", out, "--engine", "ghost", "--no-mark",
                   "--model", random_ghost / "G_unet_2blocks.pth", "--embedder-model", random_ghost / "backbone.pth",
                   "--device", "cpu", "--json", cwd=tmp_path, env={**ENV, "XDG_CACHE_HOME": str(tmp_path)},
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["engine"] == "ghost" and report["faces_swapped"] == 1
    before = cv2.imread(str(PHOTOS["yaoming"])).astype(np.int16)
    after = cv2.imread(str(out)).astype(np.int16)
    face = analyser.detect(before.astype(np.uint8))[0]
    x0, y0, x1, y1 = face.bbox.astype(int)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    inner = np.abs(after - before)[cy - 10:cy + 10, cx - 10:cx + 10].mean()
    assert inner > 5.0  # random weights paint something else over the face
    far = np.ones(before.shape[:2], bool)
    w = x1 - x0
    far[max(0, y0 - w):y1 + w, max(0, x0 - w):x1 + w] = False
    assert np.array_equal(after[far], before[far])  # nothing outside the face's region changes


def test_checkpoint_with_code_is_refused_from_the_cli(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "G_unet_2blocks.pth"
    evil.write_bytes(pickle.dumps({"generator.up1.weight": Evil()}))
    out = tmp_path / "out.png"
    proc = run_cli("image", PHOTOS["gdp"], PHOTOS["yaoming"], "-o", out, "--engine", "ghost",
                   "--model", evil, "--embedder-model", evil, "--device", "cpu", cwd=tmp_path, env=ENV)
    assert_clean_failure(proc, 4)
    assert not marker.exists() and not out.exists()


def test_generator_with_wrong_layout_is_refused(tmp_path, random_ghost):
    out = tmp_path / "out.png"
    proc = run_cli("image", PHOTOS["gdp"], PHOTOS["yaoming"], "-o", out, "--engine", "ghost",
                   "--model", random_ghost / "backbone.pth", "--embedder-model", random_ghost / "backbone.pth",
                   "--device", "cpu", cwd=tmp_path, env=ENV, timeout=300)
    assert_clean_failure(proc, 4)
    assert "GHOST" in proc.stderr and not out.exists()
