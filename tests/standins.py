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
              emap: bool = True, batch=1, seed: int = 0, pin_batch: str | None = None,
              source_term: float = 0.0) -> Path:
    """A generator with inswapper's I/O: `target` [B,3,S,S], `source` [B,512] -> `output` [B,3,S,S].

    mode 'identity' returns target; 'red' returns pure red (RGB channel 0 = the model's max
    in its [0,1] range) to catch a BGR/RGB swap. With emap, a 512x512 initializer comes last,
    as inswapper's emap does; the source is consumed (times zero) so it must be fed.

    pin_batch makes the source path look like an exported static-batch graph (for the batch
    rewrite); the output then gets a per-sample term, source_term * mean(that sample's
    (projected) source), broadcast over its pixels (0 keeps the output equal to the base):
      'reshape'  - Reshape(source, initializer [1,512,1,1]): the batch pinned at 1, as torch
                   exports x.view(1, C, 1, 1); rewritable (the constant's 1 becomes 0);
      'constant' - the same with the shape in a Constant node;
      'flatten'  - Reshape(source, Concat([1], [-1])) then a mean over the features: with a
                   batch > 1 it folds every sample into one row and mixes them, silently.
                   Not rewritable: only the batch-vs-one-by-one check can catch it.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    b = batch if batch is not None else "B"
    nodes, inits = [], []
    if pin_batch is None:
        inits.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
    if mode == "red":
        red = np.zeros((1, 3, size, size), np.float32)
        red[:, 0] = 1.0
        inits.append(numpy_helper.from_array(red, "red"))
    if pin_batch is not None:
        width = 512 if emap else int(np.prod(source_shape[1:]))
        inits.append(numpy_helper.from_array(np.array([source_term], np.float32), "source_scale"))
        if pin_batch == "reshape":
            inits.append(numpy_helper.from_array(np.array([1, width, 1, 1], np.int64), "pin_shape"))
        elif pin_batch == "flatten":
            inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
            inits.append(numpy_helper.from_array(np.array([-1], np.int64), "minus_one"))
            inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"))
        elif pin_batch != "constant":
            raise ValueError(f"unknown pin_batch {pin_batch!r}")
    if emap:
        inits.append(numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "emap"))
        nodes.append(helper.make_node("MatMul", ["source", "emap"], ["projected"]))
        consumed = "projected"
    else:
        consumed = "source"
    base = "target" if mode == "identity" else "red"
    if pin_batch is None:
        nodes.append(helper.make_node("ReduceSum", [consumed], ["ssum"], keepdims=0))
        nodes.append(helper.make_node("Mul", ["ssum", "zero"], ["nothing"]))
        nodes.append(helper.make_node("Add", [base, "nothing"], ["output"]))
    else:
        if emap is False and len(source_shape) > 2:
            nodes.append(helper.make_node("Flatten", [consumed], ["flat_source"]))
            consumed = "flat_source"
        if pin_batch == "flatten":
            nodes += [helper.make_node("Concat", ["one", "minus_one"], ["pin_shape"], axis=0),
                      helper.make_node("Reshape", [consumed, "pin_shape"], ["rows"]),
                      helper.make_node("ReduceMean", ["rows"], ["row_mean"], axes=[1], keepdims=1),
                      helper.make_node("Unsqueeze", ["row_mean", "hw_axes"], ["mean"])]
        else:
            if pin_batch == "constant":
                nodes.append(helper.make_node("Constant", [], ["pin_shape"], value=numpy_helper.from_array(
                    np.array([1, width, 1, 1], np.int64), "pin_shape_value")))
            nodes += [helper.make_node("Reshape", [consumed, "pin_shape"], ["style"], name="style_view"),
                      helper.make_node("ReduceMean", ["style"], ["mean"], axes=[1], keepdims=1)]
        nodes += [helper.make_node("Mul", ["mean", "source_scale"], ["term"]),
                  helper.make_node("Add", [base, "term"], ["output"])]
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


def op_generator(path: Path, size: int = 128, op: str = "invert", batch=1, seed: int = 0) -> Path:
    """inswapper's interface (`target` [B,3,S,S], `source` [B,512] -> `output`, emap last) around a
    known op on the target, to prove where pixel boost puts each pixel:
      'invert' - 1 - target (pointwise: the op on the full-resolution crop, pixel for pixel);
      'shift'  - target moved one pixel right (edge column repeated): neighbours in a pixel-boost
                 sub-image are k crop pixels apart, so the boosted result moves k pixels right.
    batch=None gives a dynamic batch."""
    from onnx import TensorProto, helper, numpy_helper

    b = batch if batch is not None else "B"
    inits = [numpy_helper.from_array(np.zeros((1,), np.float32), "zero")]
    nodes = []
    if op == "invert":
        inits.append(numpy_helper.from_array(np.ones((1,), np.float32), "one"))
        nodes.append(helper.make_node("Sub", ["one", "target"], ["base"]))
    elif op == "shift":
        inits += [numpy_helper.from_array(np.array([0], np.int64), "starts"),
                  numpy_helper.from_array(np.array([size - 1], np.int64), "ends"),
                  numpy_helper.from_array(np.array([3], np.int64), "axes"),
                  numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 0, 0], np.int64), "pads")]
        nodes += [helper.make_node("Slice", ["target", "starts", "ends", "axes"], ["left"]),
                  helper.make_node("Pad", ["left", "pads"], ["base"], mode="edge")]
    else:
        raise ValueError(f"unknown op {op!r}")
    inits.append(numpy_helper.from_array(np.random.default_rng(seed).standard_normal((512, 512)).astype(np.float32),
                                         "emap"))
    nodes += [helper.make_node("MatMul", ["source", "emap"], ["projected"]),
              helper.make_node("ReduceSum", ["projected"], ["ssum"], keepdims=0),
              helper.make_node("Mul", ["ssum", "zero"], ["nothing"]),
              helper.make_node("Add", ["base", "nothing"], ["output"])]
    graph = helper.make_graph(
        nodes, f"standin_{op}_generator",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [b, 3, size, size]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [b, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [b, 3, size, size])],
        inits,
    )
    return _save(graph, path)


def compute_generator(path: Path, size: int = 128, width: int = 256, blocks: int = 4, batch=1, seed: int = 0) -> Path:
    """inswapper's interface with a generator's amount of work, for timing (output: noise-like,
    not a face): conv 7x7 to width/2, two stride-2 convs to `width` at S/4, `blocks` residual
    blocks of two 3x3 convs with the source added as a per-channel bias, two upsampling convs
    back to 3 channels at S; emap last, as inswapper's. About 4.5 + 1.2·blocks GMAC per 128-px
    sample at width 256 (inswapper itself: 554 MB of weights, mostly 1024-channel style blocks)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    b = batch if batch is not None else "B"
    inits, nodes = [], []

    def conv(x, cin, cout, k, stride=1, act=True):
        name = f"conv{len(nodes)}"
        w = (rng.standard_normal((cout, cin, k, k)) * (1.0 / np.sqrt(cin * k * k))).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_y"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not act:
            return f"{name}_y"
        nodes.append(helper.make_node("LeakyRelu", [f"{name}_y"], [f"{name}_a"], alpha=0.2))
        return f"{name}_a"

    half = width // 2
    inits += [numpy_helper.from_array((rng.standard_normal((512, width)) * 0.01).astype(np.float32), "style"),
              numpy_helper.from_array(np.array([0, width, 1, 1], np.int64), "style_shape"),
              numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.0], np.float32), "up_scales")]
    nodes += [helper.make_node("MatMul", ["source", "emap"], ["projected"]),
              helper.make_node("MatMul", ["projected", "style"], ["style_vec"]),
              helper.make_node("Reshape", ["style_vec", "style_shape"], ["style_bias"])]
    x = conv("target", 3, half, 7)
    x = conv(x, half, width, 3, 2)
    x = conv(x, width, width, 3, 2)
    for i in range(blocks):
        y = conv(x, width, width, 3)
        nodes.append(helper.make_node("Add", [y, "style_bias"], [f"styled{i}"]))
        y = conv(f"styled{i}", width, width, 3, act=False)
        nodes.append(helper.make_node("Add", [x, y], [f"res{i}"]))
        x = f"res{i}"
    for i, (cin, cout) in enumerate([(width, half), (half, 64)]):
        nodes.append(helper.make_node("Resize", [x, "", "up_scales"], [f"up{i}"], mode="nearest"))
        x = conv(f"up{i}", cin, cout, 3)
    x = conv(x, 64, 3, 3, act=False)
    nodes.append(helper.make_node("Sigmoid", [x], ["output"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "emap"))
    graph = helper.make_graph(
        nodes, "standin_compute_generator",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [b, 3, size, size]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [b, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [b, 3, size, size])],
        inits,
    )
    return _save(graph, path)


def _batch_zero(nodes: list, inits: list, source: str) -> str:
    """0 * per-sample sum of `source` ([B,1,1,1]): consumes the input, carries its batch."""
    from onnx import helper, numpy_helper

    inits += [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "sum_axes"),
              numpy_helper.from_array(np.zeros((1,), np.float32), "zero")]
    nodes += [helper.make_node("ReduceSum", [source, "sum_axes"], ["per_sample"], keepdims=1),
              helper.make_node("Mul", ["per_sample", "zero"], ["batch_zero"])]
    return "batch_zero"


def occluder(path: Path, visible: np.ndarray | None = None, layout: str = "nhwc", batch=1) -> Path:
    """An XSeg-shaped occluder: `input` [B,256,256,3] (BGR, [0,1], channels last) -> `output`
    [B,256,256,1] = `visible` (256x256, 1 = face visible) whatever the crop; default: "not
    visible" over the lower-left quarter. layout 'nchw' gives the input as [B,3,256,256]
    (a channels-first export, which must be refused)."""
    from onnx import TensorProto, helper, numpy_helper

    if visible is None:
        visible = np.ones((256, 256), np.float32)
        visible[128:, :128] = 0.0
    b = batch if batch is not None else "B"
    nodes, inits = [], [numpy_helper.from_array(visible.astype(np.float32).reshape(1, 256, 256, 1), "visible")]
    zero = _batch_zero(nodes, inits, "input")
    nodes.append(helper.make_node("Add", ["visible", zero], ["output"]))
    shape = [b, 256, 256, 3] if layout == "nhwc" else [b, 3, 256, 256]
    graph = helper.make_graph(nodes, "standin_occluder",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [b, 256, 256, 1])], inits)
    return _save(graph, path)


def parser(path: Path, classes: np.ndarray, batch=1) -> Path:
    """A BiSeNet-shaped parser: `input` [B,3,512,512] -> `output` [B,19,512,512] scores whose
    argmax is `classes` (an (h, w) class map, h and w dividing 512, scaled up by nearest)."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = classes.shape
    onehot = (np.arange(19)[:, None, None] == classes[None]).astype(np.float32)[None]  # [1,19,h,w]
    b = batch if batch is not None else "B"
    nodes, inits = [], [numpy_helper.from_array(onehot, "onehot"),
                        numpy_helper.from_array(np.array([1, 1, 512 / h, 512 / w], np.float32), "scales")]
    nodes.append(helper.make_node("Resize", ["onehot", "", "scales"], ["scores"], mode="nearest",
                                  coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
    zero = _batch_zero(nodes, inits, "input")
    nodes.append(helper.make_node("Add", ["scores", zero], ["output"]))
    graph = helper.make_graph(nodes, "standin_parser",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [b, 3, 512, 512])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [b, 19, 512, 512])], inits)
    return _save(graph, path)
