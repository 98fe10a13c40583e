"""Stand-in model files that honour the published interfaces exactly.

They prove the contract (input names and shapes, alignment, normalisation,
colour order, paste-back), never quality: an identity generator returns its
target input, so a correct pipeline reproduces the target photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(graph, path: Path, opset: int = 17) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def generator(path: Path, size: int = 128, mode: str = "identity", source_shape=(1, 512),
              emap: bool = True, batch=1, seed: int = 0) -> Path:
    """A generator with inswapper's I/O: `target` [B,3,S,S], `source` [B,512] -> `output` [B,3,S,S].

    mode 'identity' returns target; 'red' returns pure red (RGB channel 0 = the model's max
    in its [0,1] range) to catch a BGR/RGB swap. With emap, a 512x512 initializer comes last,
    as inswapper's emap does; the source is consumed (times zero) so it must be fed.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    b = batch if batch is not None else "B"
    nodes, inits = [], []
    inits.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
    if mode == "red":
        red = np.zeros((1, 3, size, size), np.float32)
        red[:, 0] = 1.0
        inits.append(numpy_helper.from_array(red, "red"))
    if emap:
        inits.append(numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "emap"))
        nodes.append(helper.make_node("MatMul", ["source", "emap"], ["projected"]))
        consumed = "projected"
    else:
        consumed = "source"
    nodes.append(helper.make_node("ReduceSum", [consumed], ["ssum"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["ssum", "zero"], ["nothing"]))
    base = "target" if mode == "identity" else "red"
    nodes.append(helper.make_node("Add", [base, "nothing"], ["output"]))
    graph = helper.make_graph(
        nodes, "standin_generator",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [b, 3, size, size]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [b, *source_shape[1:]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [b, 3, size, size])],
        inits,
    )
    return _save(graph, path)


def embedder(path: Path, seed: int = 1) -> Path:
    """An ArcFace-shaped embedder: [1,3,112,112] -> [1,512] (pooled random projection)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((3 * 14 * 14, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "standin_embedder",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def converter(path: Path) -> Path:
    """A crossface-shaped converter: [1,512] -> [1,512] (identity matrix)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "eye"], ["output"])], "standin_converter",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(np.eye(512, dtype=np.float32), "eye")],
    )
    return _save(graph, path)


def restorer(path: Path, size: int = 512, fidelity: bool = False) -> Path:
    """A GFPGAN-shaped restorer: `input` [1,3,S,S] in [-1,1] -> same (identity); with fidelity,
    CodeFormer's extra `weight` input."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])]
    nodes = [helper.make_node("Identity", ["input"], ["output"])]
    if fidelity:
        inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
        nodes = [helper.make_node("Cast", ["weight"], ["wf"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["wf", "wf"], ["w2"]),
                 helper.make_node("Sub", ["w2", "w2"], ["wzero"]),
                 helper.make_node("Add", ["input", "wzero"], ["output"])]
    graph = helper.make_graph(nodes, "standin_restorer", inputs,
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])])
    return _save(graph, path)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64))[mask.astype(bool)]
    mse = float(np.mean(diff ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
