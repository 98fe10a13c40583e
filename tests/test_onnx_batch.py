"""Batching a static-batch ONNX generator (inswapper's published form), IO binding and devices.

The stand-ins pin the batch at 1 the way exported graphs do (a Reshape to [1, 512, 1, 1]),
and put a per-sample term from each sample's source into the output, so a rewrite
that mixes samples shows up as a difference between a batch and the same samples one
by one. A graph that folds the batch into its features ('flatten') cannot be fixed
by the rewrite; the load-time check must catch it and keep the per-face loop.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import standins

TERM = 1.0  # the per-sample source term's weight in the stand-ins below


def _feeds(n: int, seed: int = 0, size: int = 128) -> dict:
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((n, 512)).astype(np.float32)
    source /= np.linalg.norm(source, axis=1, keepdims=True)
    return {"target": rng.random((n, 3, size, size), dtype=np.float32), "source": source}


def _cpu_session(model_or_path):
    import onnxruntime as ort

    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _inswapper(path, device="cpu", **kwargs):
    from swapcli.swap.onnx_family import GeneratorConfig, OnnxGenerator

    return OnnxGenerator(GeneratorConfig("inswapper", "arcface_128", 128, "unit"), path, device=device, **kwargs)


@pytest.fixture(scope="module")
def gens(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch_standins")
    return {pin: standins.generator(d / f"pinned_{pin}.onnx", 128, pin_batch=pin, source_term=TERM)
            for pin in ("reshape", "constant", "flatten")} | {
        "plain": standins.generator(d / "plain.onnx", 128),
        "dynamic": standins.generator(d / "dynamic.onnx", 128, batch=None, pin_batch="reshape", source_term=TERM),
    }


# --- the rewrite ---------------------------------------------------------------------------

@pytest.mark.parametrize("pin", ["reshape", "constant"])
def test_rewrite_makes_the_pinned_standin_batchable(gens, pin):
    import onnx

    from swapcli.core.onnx_batch import BATCH, make_batch_dynamic, verify_batching

    original = onnx.load(str(gens[pin]))
    before = original.SerializeToString()
    with pytest.raises(Exception):  # the pin is real: the original graph refuses a batch of 2
        _cpu_session(original).run(["output"], _feeds(2))
    model, changes = make_batch_dynamic(original)
    assert original.SerializeToString() == before  # a copy: the input model is untouched
    assert any(c.startswith("Reshape style_view: shape [1, 512, 1, 1] -> [0, 512, 1, 1]") for c in changes), changes
    assert {i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input} == {BATCH}
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == BATCH
    assert len(model.graph.value_info) == 0
    names = {i.name for i in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    assert "pin_shape" not in names  # the replaced constant is gone, not left dangling
    onnx.checker.check_model(model)

    session = _cpu_session(model)
    feeds = _feeds(5)
    together = session.run(["output"], feeds)[0]
    apart = np.concatenate([session.run(["output"], {k: v[i:i + 1] for k, v in feeds.items()})[0] for i in range(5)])
    np.testing.assert_allclose(together, apart, atol=1e-6)
    # and one by one it is the original graph's answer, the source term included
    reference = _cpu_session(gens[pin])
    for i in range(5):
        one = reference.run(["output"], {k: v[i:i + 1] for k, v in feeds.items()})[0]
        np.testing.assert_allclose(apart[i:i + 1], one, atol=1e-6)
        assert np.abs(one - feeds["target"][i:i + 1]).max() > 1e-3  # the source term is really there
    check = verify_batching(session, lambda n, rng: _feeds(n, seed=int(rng.integers(1 << 30))), "output")
    assert check and check.diff <= check.tolerance


def test_already_dynamic_graph_comes_back_unchanged(gens):
    import onnx

    from swapcli.core.onnx_batch import make_batch_dynamic

    model = onnx.load(str(gens["dynamic"]))
    same, changes = make_batch_dynamic(model)
    assert same is model and changes == []


def test_reshape_of_a_weight_is_not_touched():
    """A [1, C, 1, 1] view of a bias (no batch in its input) must keep its 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from swapcli.core.onnx_batch import make_batch_dynamic

    bias = np.arange(4, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["bias", "shape"], ["bias4"]),
         helper.make_node("Add", ["x", "bias4"], ["y"])],
        "bias_view",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
        [numpy_helper.from_array(bias, "bias"), numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rewritten, changes = make_batch_dynamic(model)
    assert not any(c.startswith("Reshape") for c in changes), changes
    x = np.random.default_rng(0).random((3, 4, 2, 2), dtype=np.float32)
    y = _cpu_session(rewritten).run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(y, x + bias.reshape(1, 4, 1, 1))
    onnx.checker.check_model(rewritten)


def test_a_graph_that_mixes_samples_is_caught(gens):
    import onnx

    from swapcli.core.onnx_batch import make_batch_dynamic, verify_batching

    model, changes = make_batch_dynamic(onnx.load(str(gens["flatten"])))
    assert not any(c.startswith("Reshape") for c in changes)  # nothing it could fix
    session = _cpu_session(model)
    session.run(["output"], _feeds(2))  # runs without an error: the mixing is silent
    check = verify_batching(session, lambda n, rng: _feeds(n), "output")
    assert not check and check.diff > 100 * check.tolerance and not check.error, check


def test_verification_reports_a_batch_the_graph_refuses(gens):
    from swapcli.core.onnx_batch import verify_batching

    check = verify_batching(_cpu_session(gens["reshape"]), lambda n, rng: _feeds(n), "output")
    assert not check and check.error and "\n" not in check.error


# --- the generator ---------------------------------------------------------------------------

def _frame_and_faces(n: int, seed: int = 0):
    from swapcli.analyse.face import Face

    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (360, 200 * n + 40, 3), dtype=np.uint8)
    kps0 = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
    faces = []
    for i in range(n):
        scale = 1.2 + 0.3 * i
        kps = kps0 * scale + np.array([40 + 200 * i, 60 + 15 * i])
        box = np.array([kps[:, 0].min() - 30, kps[:, 1].min() - 40, kps[:, 0].max() + 30, kps[:, 1].max() + 30])
        faces.append(Face(bbox=box, score=0.9, kps=kps))
    return frame, faces


def test_static_standin_generator_ends_batched_and_matches_one_by_one(gens, monkeypatch, caplog):
    import swapcli.core.onnx as core_onnx

    with caplog.at_level(logging.DEBUG, logger="swapcli"):
        gen = _inswapper(gens["reshape"])
    assert gen.batched and gen.batch_check and gen.batch_check.diff <= gen.batch_check.tolerance
    assert any("style_view" in c for c in gen.batch_changes)
    assert "rewritten to a dynamic batch" in caplog.text
    assert gen.session.get_inputs()[0].shape[0] == "batch"

    # swap_many over several faces == one face at a time
    latent = np.random.default_rng(4).standard_normal(512).astype(np.float32)
    latent /= np.linalg.norm(latent)
    gen.source_latent = lambda sources: latent
    frame, faces = _frame_and_faces(4)
    together = gen.swap_many(frame, faces, [])
    assert len(together) == 4
    for face, result in zip(faces, together):
        alone = gen.swap(frame, face, [])
        assert result.roi == alone.roi
        if getattr(result, "crop", None) is not None:  # crop engines hand over the generated crop
            np.testing.assert_allclose(np.asarray(result.crop), np.asarray(alone.crop), atol=1e-5 * 255)
            from swapcli.swap.crop import paste_back

            result, alone = paste_back(result, frame.shape), paste_back(alone, frame.shape)
        np.testing.assert_allclose(result.image, alone.image, atol=1e-5 * 255)
        np.testing.assert_array_equal(result.keep, alone.keep)

    # distinct sources per crop, chunked by max_batch: equal to the original graph face by face
    sizes = []
    real = core_onnx.run_bound
    monkeypatch.setattr(core_onnx, "run_bound", lambda s, f, o: sizes.append(len(f["target"])) or real(s, f, o))
    gen.max_batch = 2
    rng = np.random.default_rng(5)
    crops = rng.integers(0, 256, (5, 128, 128, 3), dtype=np.uint8)
    latents = _feeds(5, seed=6)["source"]
    out = gen.generate(crops, latents)
    assert sizes == [2, 2, 1]
    reference = _cpu_session(gens["reshape"])
    from swapcli.swap.crop import from_tensor, to_tensor

    x = to_tensor(crops, "unit")
    expected = np.concatenate([reference.run(["output"], {"target": x[i:i + 1], "source": latents[i:i + 1]})[0]
                               for i in range(5)])
    np.testing.assert_allclose(out, from_tensor(expected, "unit"), atol=1e-5 * 255)


def test_generator_falls_back_to_the_loop_when_the_rewrite_mixes_samples(gens, caplog):
    with caplog.at_level(logging.INFO, logger="swapcli"):
        gen = _inswapper(gens["flatten"])
    assert not gen.batched and gen.batch_check is not None and not gen.batch_check
    assert "running face by face" in caplog.text
    assert gen.session.get_inputs()[0].shape[0] == 1  # the original graph, not the rewritten one
    rng = np.random.default_rng(7)
    crops = rng.integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    latents = _feeds(3, seed=8)["source"]
    out = gen.generate(crops, latents)
    from swapcli.swap.crop import from_tensor, to_tensor

    reference = _cpu_session(gens["flatten"])
    x = to_tensor(crops, "unit")
    expected = np.concatenate([reference.run(["output"], {"target": x[i:i + 1], "source": latents[i:i + 1]})[0]
                               for i in range(3)])
    np.testing.assert_array_equal(out, from_tensor(expected, "unit"))


def test_generator_falls_back_when_the_rewrite_raises(gens, monkeypatch, caplog):
    import swapcli.core.onnx_batch as onnx_batch

    def broken(model, inplace=False):
        raise RuntimeError("simulated rewrite failure")

    monkeypatch.setattr(onnx_batch, "make_batch_dynamic", broken)
    with caplog.at_level(logging.INFO, logger="swapcli"):
        gen = _inswapper(gens["reshape"])
    assert not gen.batched and "simulated rewrite failure" in caplog.text
    out = gen.generate(np.zeros((2, 128, 128, 3), np.uint8), _feeds(2)["source"])
    assert out.shape == (2, 128, 128, 3)


def test_plain_standin_batches_and_dynamic_graph_is_not_rewritten(gens):
    gen = _inswapper(gens["plain"])
    assert gen.batched
    dyn = _inswapper(gens["dynamic"])
    assert dyn.batched and dyn.batch_check is None and dyn.batch_changes == []


def test_emap_comes_from_the_single_load(gens, monkeypatch):
    import onnx
    from onnx import numpy_helper

    expected = numpy_helper.to_array(onnx.load(str(gens["reshape"])).graph.initializer[-1])
    calls = []
    real = onnx.load
    monkeypatch.setattr(onnx, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    gen = _inswapper(gens["reshape"])
    assert len(calls) == 1
    assert gen.emap.dtype == np.float32 and gen.emap.shape == (512, 512)
    np.testing.assert_array_equal(gen.emap, expected)


def test_emap_checks_keep_their_messages(tmp_path):
    from swapcli.core.errors import ModelError
    from swapcli.swap.onnx_family import read_emap

    path = standins.generator(tmp_path / "no_emap.onnx", 128, emap=False, pin_batch="reshape")
    with pytest.raises(ModelError, match="not inswapper's 512x512 emap"):
        _inswapper(path)
    with pytest.raises(ModelError, match="not inswapper's 512x512 emap"):
        read_emap(path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        _inswapper(junk)


def test_load_time_verification_is_cheap(gens):
    import time

    start = time.perf_counter()
    gen = _inswapper(gens["reshape"])
    total = time.perf_counter() - start
    print(f"load {total * 1000:.0f} ms, of which verification {gen.batch_check.seconds * 1000:.1f} ms")
    assert gen.batch_check.seconds < 2.0


# --- create_session and run_bound ------------------------------------------------------------

def test_create_session_from_bytes_and_its_messages(gens):
    from swapcli.core.errors import ModelError
    from swapcli.core.onnx import create_session

    data = gens["reshape"].read_bytes()
    session = create_session(data, "cpu", name="standin (in memory)")
    assert [i.name for i in session.get_inputs()] == ["target", "source"]
    with pytest.raises(ModelError) as info:
        create_session(b"garbage", "cpu", name="standin (in memory)")
    assert "cannot load ONNX model standin (in memory):" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="in-memory ONNX model"):
        create_session(b"garbage", "cpu")


def test_run_bound_on_cpu_equals_session_run(gens):
    import torch

    from swapcli.core.onnx import run_bound

    gen = _inswapper(gens["reshape"])
    feeds = _feeds(3, seed=11)
    expected = gen.session.run(["output"], feeds)[0]
    got = run_bound(gen.session, feeds, "output")
    assert isinstance(got, np.ndarray) and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    # non-contiguous numpy views and torch CPU tensors give the same answer
    strided = {"target": np.asfortranarray(feeds["target"]), "source": feeds["source"]}
    np.testing.assert_array_equal(run_bound(gen.session, strided, "output"), expected)
    as_torch = run_bound(gen.session, {k: torch.from_numpy(v) for k, v in feeds.items()}, "output")
    assert isinstance(as_torch, torch.Tensor) and as_torch.device.type == "cpu"
    np.testing.assert_array_equal(as_torch.numpy(), expected)


# --- devices -------------------------------------------------------------------------------------

@pytest.fixture()
def fake_providers(monkeypatch, tmp_path):
    import onnxruntime as ort

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def use(*names):
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(names))

    return use


def test_cuda_n_and_tensorrt_providers(fake_providers, tmp_path):
    from swapcli.core.device import provider_names, providers_for

    fake_providers("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert providers_for("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    cache = tmp_path / "cache" / "swapcli" / "tensorrt"
    trt = providers_for("tensorrt")
    assert trt == [("TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": True,
                                                  "trt_engine_cache_enable": True,
                                                  "trt_engine_cache_path": str(cache)}),
                   ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert cache.is_dir()
    trt2 = providers_for("tensorrt:2")
    assert trt2[0][1]["device_id"] == 2 and trt2[1] == ("CUDAExecutionProvider", {"device_id": 2})
    assert provider_names(trt2) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    # unchanged forms
    assert providers_for("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cpu") == ["CPUExecutionProvider"]


@pytest.mark.parametrize("device,missing", [("cuda:1", "CUDA"), ("tensorrt", "TensorRT"), ("tensorrt:1", "TensorRT")])
def test_gpu_devices_fail_loudly_when_missing(fake_providers, device, missing):
    from swapcli.core.device import providers_for
    from swapcli.core.errors import ModelError

    fake_providers("CUDAExecutionProvider", "CPUExecutionProvider") if missing == "TensorRT" else \
        fake_providers("CPUExecutionProvider")
    with pytest.raises(ModelError) as info:
        providers_for(device)
    text = str(info.value)
    assert "\n" not in text and f"--device {device}" in text and f"no {missing} provider" in text
    assert ("--device cuda" in text) if missing == "TensorRT" else ("'gpu' extra" in text)


def test_unknown_and_unchanged_device_messages(fake_providers):
    from swapcli.core.device import DEVICES, providers_for
    from swapcli.core.errors import ModelError

    fake_providers("CPUExecutionProvider")
    assert providers_for("auto") == ["CPUExecutionProvider"]
    for bad in ("cuda:x", "gpu", "cpu:1", "tensorrt:"):
        with pytest.raises(ModelError, match="unknown device"):
            providers_for(bad)
    with pytest.raises(ModelError, match=r"^--device cuda was asked for but onnxruntime has no CUDA provider "
                                         r"\(available: CPUExecutionProvider\); install the 'gpu' extra$"):
        providers_for("cuda")
    assert "cuda:N" in DEVICES and "tensorrt" in DEVICES


@pytest.mark.parametrize("device,asked", [
    ("cuda:1", [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]),
    ("tensorrt", [("TensorrtExecutionProvider", {"device_id": 0}), ("CUDAExecutionProvider", {"device_id": 0}),
                  "CPUExecutionProvider"]),
])
def test_session_that_did_not_get_its_gpu_provider_is_an_error(gens, monkeypatch, device, asked):
    """onnxruntime quietly drops a GPU provider that fails to load; create_session must not."""
    import onnxruntime as ort

    import swapcli.core.device as core_device
    from swapcli.core.errors import ModelError
    from swapcli.core.onnx import create_session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")

    class CpuOnly(ort.InferenceSession):  # what onnxruntime hands back after its silent fallback
        def __init__(self, model, sess_options=None, providers=None):
            super().__init__(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(core_device, "providers_for", lambda d: asked)
    monkeypatch.setattr(ort, "InferenceSession", CpuOnly)
    with pytest.raises(ModelError) as info:
        create_session(gens["reshape"], device)
    text = str(info.value)
    assert "\n" not in text and f"--device {device}" in text and "failed to load" in text
    assert "pinned_reshape.onnx" in text


def test_tensorrt_gets_an_explicit_batch_profile(gens, monkeypatch):
    """The rewritten generator asks TensorRT for one engine covering batch 1..max_batch."""
    import onnxruntime as ort

    import swapcli.core.device as core_device
    from swapcli.core.errors import ModelError

    seen = []

    class Capture(ort.InferenceSession):
        def __init__(self, model, sess_options=None, providers=None):
            seen.append(providers)
            super().__init__(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    asked = [("TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": True}),
             ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    monkeypatch.setattr(core_device, "providers_for", lambda d: asked)
    monkeypatch.setattr(ort, "InferenceSession", Capture)
    with pytest.raises(ModelError, match="TensorRT provider failed to load"):
        _inswapper(gens["reshape"], device="tensorrt")
    trt = seen[0][0][1]
    assert trt["trt_fp16_enable"] is True
    assert trt["trt_profile_min_shapes"] == "target:1x3x128x128,source:1x512"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "target:32x3x128x128,source:32x512"
    assert seen[0][1:] == asked[1:]
