"""Give a static-batch ONNX graph a dynamic batch, and check that it really batches.

insightface's inswapper_128.onnx is exported with a batch of 1: its inputs and
output say [1, ...], and some Reshape nodes carry shape constants that start
with 1 (the exporter froze `x.view(1, C, 1, 1)`). `make_batch_dynamic` turns
the first dim of the inputs and outputs into a symbolic "batch" and rewrites
those Reshape constants to copy dim 0 from their input (ONNX's 0 in a Reshape
shape, with allowzero off), but only where shape inference shows that the
Reshape's input really carries the batch in its first dim.

Other batch pins (Expand/Tile/ConstantOfShape/Resize sizes starting with 1,
shapes computed from Concat of constants, control-flow subgraphs) are left
alone on purpose: a blind rewrite there could mix or drop samples. A rewrite
is only trusted after `verify_batching` has run a batch in one call and the
same samples one by one and compared them; a graph that still mixes samples
(a Reshape that folds the batch into features) fails that check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

BATCH = "batch"
SMALL_INITIALIZER = 4096  # elements: shape constants are tiny; weights stay out of the shape-inference skeleton
MAX_PASSES = 64  # each pass can unlock Reshapes downstream of the ones it fixed


def _dims(value_info) -> list | None:
    """[int | str | None] for a ValueInfoProto's tensor shape; None when it has no shape."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _set_batch(value_info) -> None:
    dim = value_info.type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = BATCH


def batch_pinned_inputs(model) -> list[str]:
    """Graph inputs (not initializers) of rank >= 2 whose first dim is fixed at 1."""
    inits = {i.name for i in model.graph.initializer}
    names = []
    for item in model.graph.input:
        dims = _dims(item)
        if item.name not in inits and dims and len(dims) >= 2 and dims[0] == 1:
            names.append(item.name)
    return names


def _constants(graph) -> dict:
    """name -> numpy array for initializers and Constant nodes holding a tensor or ints."""
    from onnx import numpy_helper

    values = {}
    for init in graph.initializer:
        if init.data_type in (6, 7):  # INT32, INT64: the only types a Reshape shape can have
            values[init.name] = ("initializer", init)
    for node in graph.node:
        if node.op_type != "Constant" or not node.output:
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type in (6, 7):
                values[node.output[0]] = ("constant", attr.t)
            elif attr.name == "value_ints":
                values[node.output[0]] = ("constant_ints", np.array(attr.ints, np.int64))
    out = {}
    for name, (kind, payload) in values.items():
        out[name] = payload if kind == "constant_ints" else numpy_helper.to_array(payload)
    return out


def _skeleton(model):
    """A weight-free copy for shape inference: big initializers become typed graph inputs."""
    from onnx import helper

    graph = model.graph
    small, typed = [], []
    for init in graph.initializer:
        numel = int(np.prod(init.dims)) if len(init.dims) else 1
        if numel <= SMALL_INITIALIZER:
            small.append(init)
        else:
            typed.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    inputs = [i for i in graph.input if i.name not in {t.name for t in typed}]
    skeleton = helper.make_graph(list(graph.node), graph.name or "skeleton", inputs + typed,
                                 list(graph.output), small)
    out = helper.make_model(skeleton, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def _inferred_dims(model) -> dict[str, list | None]:
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(_skeleton(model), strict_mode=False, data_prop=True)
    except Exception:  # an op onnx cannot infer: rewrite nothing, verification has the last word
        return {}
    graph = inferred.graph
    return {vi.name: _dims(vi) for vi in [*graph.value_info, *graph.input, *graph.output]}


def make_batch_dynamic(model, inplace: bool = False):
    """(model with a symbolic batch, [what changed]).

    The returned model has a symbolic first dim ("batch") on the inputs that were
    pinned at 1 and on the outputs, no intermediate value_info (the static shapes
    there would be stale), and every Reshape whose shape constant starts with 1,
    whose allowzero is off and whose data input carries the batch in dim 0 now
    reads its shape from a new initializer starting with 0 (copy dim 0). Shared
    constants are never edited in place. A graph without a pinned input is
    returned as it is (the same object), with no changes.
    `inplace=True` edits `model` itself instead of a copy (saves a copy of the weights).
    """
    import onnx
    from onnx import numpy_helper

    pinned = batch_pinned_inputs(model)
    if not pinned:
        return model, []
    if not inplace:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    graph = model.graph
    changes: list[str] = []
    for item in graph.input:
        if item.name in pinned:
            _set_batch(item)
            changes.append(f"input {item.name}: dim 0 1 -> '{BATCH}'")
    for item in graph.output:
        dims = _dims(item)
        if dims and dims[0] in (1, None):
            _set_batch(item)
            changes.append(f"output {item.name}: dim 0 {dims[0]} -> '{BATCH}'")
    if len(graph.value_info):
        changes.append(f"cleared {len(graph.value_info)} intermediate value_info shapes")
        del graph.value_info[:]

    existing = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    rewritten: dict[str, str] = {}  # original shape constant -> its batch-copying twin
    done: set[int] = set()
    for _ in range(MAX_PASSES):
        constants = _constants(graph)
        dims = _inferred_dims(model)
        progress = False
        for index, node in enumerate(graph.node):
            if index in done or node.op_type != "Reshape" or len(node.input) < 2:
                continue
            allowzero = next((a.i for a in node.attribute if a.name == "allowzero"), 0)
            shape = constants.get(node.input[1])
            data = dims.get(node.input[0])
            if allowzero or shape is None or shape.ndim != 1 or not len(shape) or int(shape[0]) != 1:
                continue
            if not data or data[0] != BATCH:
                continue  # its input does not carry the batch in dim 0: leave it (verification decides)
            source = node.input[1]
            if source not in rewritten:
                name = f"{source}__batch0"
                while name in existing:
                    name += "_"
                fixed = shape.copy()
                fixed[0] = 0
                graph.initializer.append(numpy_helper.from_array(fixed, name))
                existing.add(name)
                rewritten[source] = name
            node.input[1] = rewritten[source]
            done.add(index)
            progress = True
            changes.append(f"Reshape {node.name or node.output[0]}: shape {shape.tolist()} -> "
                           f"{[0, *shape.tolist()[1:]]} (copy dim 0)")
        if not progress:
            break
    _drop_unused(graph, set(rewritten))
    return model, changes


def _drop_unused(graph, names: set[str]) -> None:
    """Remove the replaced shape constants that nothing reads any more."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = names - used
    if not dead:
        return
    # delete by index, in place: rebuilding the repeated field would copy every weight
    for i in reversed([i for i, init in enumerate(graph.initializer) if init.name in dead]):
        del graph.initializer[i]
    for i in reversed([i for i, n in enumerate(graph.node)
                       if n.op_type == "Constant" and n.output and n.output[0] in dead]):
        del graph.node[i]


# --- verification --------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCheck:
    ok: bool
    diff: float  # max |batched - one by one|
    scale: float  # the output's range, for the relative tolerance
    tolerance: float  # absolute tolerance used (rtol * scale)
    seconds: float
    error: str = ""  # set when the batched run failed outright

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        if self.error:
            return f"batched run failed: {self.error}"
        return (f"max |batch - one by one| = {self.diff:.3g} (tolerance {self.tolerance:.3g}, "
                f"output range {self.scale:.3g}), {self.seconds * 1000:.0f} ms")


def verify_batching(session, feeds_fn: Callable[[int, np.random.Generator], dict], output: str,
                    n: int = 2, rtol: float = 1e-4, seed: int = 0) -> BatchCheck:
    """Run n distinct samples as one batch and one by one; they must agree.

    feeds_fn(n, rng) returns {input name: array with n samples}; samples must differ
    from each other so that a graph which mixes them (a Reshape that folds the batch
    into features, a reduction over dim 0) gives a different answer in the batch.
    The tolerance is rtol times the range of the one-by-one outputs.
    """
    start = time.perf_counter()
    feeds = feeds_fn(n, np.random.default_rng(seed))
    singles = [session.run([output], {k: v[i:i + 1] for k, v in feeds.items()})[0] for i in range(n)]
    apart = np.concatenate(singles).astype(np.float64)
    scale = float(apart.max() - apart.min()) if apart.size else 0.0
    tolerance = rtol * max(scale, 1e-6)
    try:
        together = np.asarray(session.run([output], feeds)[0], dtype=np.float64)
    except Exception as exc:  # onnxruntime raises several types (a Reshape that cannot take the batch)
        return BatchCheck(False, float("inf"), scale, tolerance, time.perf_counter() - start,
                          str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if together.shape != apart.shape:
        return BatchCheck(False, float("inf"), scale, tolerance, time.perf_counter() - start,
                          f"batched output shape {list(together.shape)}, expected {list(apart.shape)}")
    diff = float(np.max(np.abs(together - apart))) if apart.size else 0.0
    finite = bool(np.isfinite(together).all() == np.isfinite(apart).all())
    return BatchCheck(finite and diff <= tolerance, diff, scale, tolerance, time.perf_counter() - start)


def batched_session(model, name: str, device: str, threads: int, feeds_fn: Callable, rtols: dict[str, float],
                    trt_profile: Callable[[object], dict | None] | None = None):
    """A session on `model` rewritten to a dynamic batch and verified to batch, with the check and
    the changes, or (None, check or None, changes) when the rewrite fails or does not batch (the
    caller then runs item by item).

    Consumes `model` (edited in place: no second copy of the weights). Errors that are the user's to
    fix (--device asked for a GPU that is not there) are raised as usual. `feeds_fn(inputs, n, rng)`
    makes probe inputs from the session's {input name: shape}; `rtols` maps a provider to the
    tolerance of the check; `trt_profile(inputs)` gives TensorRT shape profiles.
    """
    import logging

    from swapcli.core.device import providers_for
    from swapcli.core.errors import ModelError
    from swapcli.core.onnx import create_session

    log = logging.getLogger("swapcli")
    providers_for(device)  # a missing GPU is a loud error, not a reason to fall back
    shapes = graph_inputs(model)
    changes: list[str] = []
    try:
        start = time.perf_counter()
        model, changes = make_batch_dynamic(model, inplace=True)
        data = model.SerializeToString()
        rewrite_s = time.perf_counter() - start
        model.Clear()  # the caller's reference too: drop the weights before the session copies them
        session = create_session(data, device, threads, name=f"{name} (batch-rewritten)",
                                 trt_profile=trt_profile(shapes) if trt_profile else None)
        del data
    except ModelError as exc:
        if "failed to load" in str(exc):  # the GPU provider itself: the original file would fail the same way
            raise
        log.info("%s: batch rewrite failed (%s); running face by face", name, exc)
        return None, None, changes
    except Exception as exc:  # onnx / protobuf errors (a model over 2 GB cannot be serialised)
        log.info("%s: batch rewrite failed (%s: %s); running face by face", name, type(exc).__name__,
                 str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return None, None, changes
    inputs = {i.name: i.shape for i in session.get_inputs()}
    rtol = rtols.get(session.get_providers()[0], max(rtols.values()))
    check = verify_batching(session, lambda n, rng: feeds_fn(inputs, n, rng), session.get_outputs()[0].name,
                            n=2, rtol=rtol)
    if not check:
        log.info("%s: the batch-rewritten graph does not batch (%s); running face by face", name, check.describe())
        return None, check, changes
    log.debug("%s: batch of 1 rewritten to a dynamic batch in %.0f ms (%s); verified: %s",
              name, rewrite_s * 1000, "; ".join(changes), check.describe())
    return session, check, changes


def graph_inputs(model) -> dict[str, list]:
    """Graph inputs that are not initializers -> their dims (int, or the symbolic name / None)."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for item in model.graph.input:
        if item.name in inits:
            continue
        dims = []
        for d in item.type.tensor_type.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
        out[item.name] = dims
    return out
