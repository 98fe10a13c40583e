"""Batching changes how work is grouped, never the result.

Faces of many frames go through the models together (swap_frames; `--batch N`
in the video command). These tests hold the batched path to the frame-by-frame
one: pixel for pixel in memory, and frame for frame through the whole CLI.
"""

from __future__ import annotations

import numpy as np
import pytest

import standins
from clips import make_clip
from conftest import PHOTOS, run_cli
from swapcli.core.options import EngineOptions
from swapcli.pipeline.swapper import FaceJob, Swapper
from swapcli.read.image import read_image


def _frames() -> list[np.ndarray]:
    """Three real photos: 6 faces, 1 face, and a shifted copy of the first."""
    t1 = read_image(PHOTOS["t1"]).bgr
    return [t1, read_image(PHOTOS["yaoming"]).bgr, np.ascontiguousarray(np.roll(t1, 7, axis=1))]


def _both_ways(swapper: Swapper) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    sources = swapper.load_sources([PHOTOS["gdp"]])
    frames = _frames()
    faces = [swapper.detect(f) for f in frames]
    one = [f.copy() for f in frames]
    for frame, found in zip(one, faces):
        swapper.swap_faces(frame, [_fresh(x) for x in found], sources)
    many = [f.copy() for f in frames]
    reports = swapper.swap_frames([(frame, [FaceJob(_fresh(x), sources) for x in found])
                                   for frame, found in zip(many, faces)])
    return one, many, reports


def _fresh(face):
    from swapcli.analyse.face import Face

    return Face(bbox=face.bbox.copy(), score=face.score, kps=face.kps.copy())


def test_batched_frames_equal_frame_by_frame_morph(swapper):
    one, many, reports = _both_ways(swapper)
    assert [len(r) for r in reports] == [6, 1, 6]
    for a, b, original in zip(one, many, _frames()):
        assert np.array_equal(a, b)
        assert np.abs(a.astype(int) - original).max() > 50  # faces really changed


@pytest.fixture(scope="module")
def standin_swapper(tmp_path_factory):
    d = tmp_path_factory.mktemp("batching")
    gen = standins.generator(d / "inswapper_tint.onnx", 128, mode="identity")
    emb = standins.embedder(d / "embedder.onnx")
    return Swapper(EngineOptions(engine="inswapper", device="cpu", model=str(gen), embedder_model=str(emb)))


def test_batched_frames_equal_frame_by_frame_crop_engine(standin_swapper):
    one, many, reports = _both_ways(standin_swapper)
    assert sum(len(r) for r in reports) == 13
    for a, b in zip(one, many):
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 1, diff.max()  # onnxruntime may round a batch differently by 1 ulp


@pytest.mark.slow
def test_video_batch_sizes_give_the_same_frames(tmp_path):
    from swapcli.read.video import FrameReader, probe

    clip = make_clip(tmp_path / "clip.mp4", "yaoming", seconds=1.2, fps=25, size=(480, 360), motion="pan")
    outs = {}
    for batch in (1, 5):
        out = tmp_path / f"b{batch}.mp4"
        proc = run_cli("video", PHOTOS["gdp"], clip, "-o", out, "--batch", batch, "--no-mark", "--codec", "libx264",
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        with FrameReader(probe(out)) as reader:
            outs[batch] = np.stack(list(reader))
    assert outs[1].shape == outs[5].shape and len(outs[1]) == 30
    assert np.array_equal(outs[1], outs[5])
    with FrameReader(probe(clip)) as reader:
        original = np.stack(list(reader))
    assert np.abs(outs[5].astype(int) - original).max() > 50


def test_batched_detection_equals_one_by_one(analyser):
    import cv2

    frames = [cv2.resize(read_image(PHOTOS[k]).bgr, (960, 540)) for k in ("t1", "yaoming", "players", "gdp")]
    frames.append(np.ascontiguousarray(np.roll(frames[0], 33, axis=0)))
    one = [analyser.detect(f) for f in frames]
    many = analyser.detect_many(frames, batched=True)
    assert [len(x) for x in one] == [len(x) for x in many] and sum(map(len, one)) >= 20
    for a, b in zip(one, many):
        for fa, fb in zip(a, b):
            assert np.allclose(fa.bbox, fb.bbox, atol=1e-3) and np.allclose(fa.kps, fb.kps, atol=1e-3)
            assert abs(fa.score - fb.score) < 1e-5


def test_batched_landmarks_equal_one_by_one(analyser):
    image = read_image(PHOTOS["t1"]).bgr
    faces = analyser.detect(image)
    one = [analyser.landmarks(image, f).copy() for f in faces]
    many = analyser.landmarks_many([(image, f) for f in faces])
    assert len(many) == 6
    assert max(np.abs(a - b).max() for a, b in zip(one, many)) < 1e-2


def test_paste_on_torch_matches_cv2(tmp_path):
    """The GPU paste-back path (run here on torch's CPU device) against the cv2 path, through
    the whole Swapper with a crop engine and real photos: the stated tolerance of
    blend/torch_paste.py (max 2 grey levels, mean < 0.01) holds for the frame."""
    gen = standins.generator(tmp_path / "gen.onnx", 128, mode="red")
    emb = standins.embedder(tmp_path / "embedder.onnx")
    out = {}
    for paste in ("cv2", "torch"):
        sw = Swapper(EngineOptions(engine="inswapper", device="cpu", model=str(gen), embedder_model=str(emb),
                                   paste=paste))
        assert (sw.compositor is None) == (paste == "cv2")
        sources = sw.load_sources([PHOTOS["gdp"]])
        frame = read_image(PHOTOS["t1"]).bgr.copy()
        reports = sw.swap_faces(frame, sw.detect(frame), sources)
        out[paste] = (frame, [(round(r.blend.offset, 3), r.blend.params) for r in reports])
    (a, ra), (b, rb) = out["cv2"], out["torch"]
    assert ra == rb and len(ra) == 6
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert (a[..., 2].astype(int) - read_image(PHOTOS["t1"]).bgr[..., 2]).max() > 100  # red faces pasted


def test_paste_torch_refused_for_the_embedded_engine():
    from swapcli.core.errors import UsageError

    with pytest.raises(UsageError, match="--paste torch"):
        Swapper(EngineOptions(engine="morph", device="cpu", paste="torch"))


def test_ghost_device_normalisation_matches_host():
    """The GPU path's on-device pre/post-processing (run here on the CPU device) equals the
    host's to_tensor/from_tensor, so CUDA and CPU GHOST runs differ only by the model's fp16."""
    import torch

    from swapcli.swap.crop import from_tensor, to_tensor
    from swapcli.swap.ghost import crops_from_device, crops_to_device

    crops = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    x = crops_to_device(crops, torch.device("cpu"), torch.float32)
    assert np.allclose(x.numpy(), to_tensor(crops, "tanh"), atol=1e-6)
    y = np.tanh(np.random.default_rng(1).standard_normal((3, 3, 16, 16))).astype(np.float32) * 1.1
    assert np.allclose(crops_from_device(torch.from_numpy(y)), from_tensor(y, "tanh"), atol=1e-3)


def test_streamed_frames_equal_serial_with_a_tracks_mask_rule(swapper):
    """`swapcli video` swaps the embedded engine's frames on several threads (Swapper.streaming);
    a track's mask rule is fed each frame's outline offset, so its calls must keep frame order
    even when a later frame is done first (here: 6-face frames between 1-face frames). The frames
    and the rule's state equal the serial run's."""
    from swapcli.select.tracking import MaskSmoother

    sources = swapper.load_sources([PHOTOS["gdp"]])
    crowd, single = read_image(PHOTOS["t1"]).bgr, read_image(PHOTOS["yaoming"]).bgr
    frames = [np.ascontiguousarray(np.roll(crowd if i % 2 == 0 else single, 4 * i, axis=1)) for i in range(6)]
    faces = [swapper.detect(f) for f in frames]
    faces[3] = []  # a frame without faces is done at once, but not before the frames ahead of it

    def run(sw: Swapper):
        smoother, calls = MaskSmoother(), []

        def at(t: float):
            def params(offset=None):
                calls.append(t)
                if offset is not None:
                    smoother.update(offset, t)
                return smoother.params()
            return params

        out = [f.copy() for f in frames]
        with sw.streaming():
            threaded = sw._pool is not None
            reports = sw.swap_frames([(o, [FaceJob(_fresh(x), sources, at(i / 25)) for x in found])
                                      for i, (o, found) in enumerate(zip(out, faces))])
        return out, [[r.blend.params for r in frame] for frame in reports], calls, threaded

    serial = run(swapper)
    streamed = run(Swapper(EngineOptions(stream=True, threads=2)))
    assert not serial[3] and streamed[3]  # the second run really used the frame threads
    assert len(streamed[2]) == 6 * 3 + 2 and streamed[2] == sorted(streamed[2]) == serial[2]
    assert serial[1] == streamed[1]
    for i, (a, b, original) in enumerate(zip(serial[0], streamed[0], frames)):
        assert np.array_equal(a, b)
        assert (np.abs(a.astype(int) - original).max() > 50) == (i != 3)


def test_frame_order_gate_under_any_completion_order():
    """InOrder: whatever order threads finish in, and with frames that have no faces or fail, the
    rules are called in frame order, nothing waits forever, and no event is left behind."""
    import random
    import threading
    import time

    from swapcli.pipeline.swapper import InOrder

    rng = random.Random(7)
    for _ in range(50):
        order, calls = InOrder(), []
        ids = [order.number() for _ in range(24)]
        faces = {i: rng.choice([0, 0, 1, 3]) for i in ids}
        fails = {i: rng.random() < 0.1 for i in ids}
        delays = {i: rng.random() * 0.002 for i in ids}

        def frame(i: int) -> None:
            time.sleep(delays[i])
            try:
                if fails[i]:
                    raise RuntimeError("this frame failed")
                for k in range(faces[i]):
                    order.gate(i, k == faces[i] - 1, lambda offset, i=i: calls.append(i))(0.0)
            except RuntimeError:
                pass
            finally:
                order.wait(i - 1)
                order.done(i)

        threads = [threading.Thread(target=frame, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        assert calls == sorted(calls)
        assert not order._events and not order._finished
