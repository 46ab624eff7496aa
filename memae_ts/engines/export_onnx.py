"""ONNX export of a bundle's network, built from docs/bundle-format.md with the `onnx` helpers.

The graph is written from the bundle alone (no torch needed), so any bundle a trainer or a hand
produced exports the same way the C++ runtime and the numpy engine read it: scaling (in double,
like the numpy reference), the encoder, the memory module (cosine or dot addressing, softmax with
temperature, continuous hard shrinkage, L1 renormalisation, read), the decoder, and the score.
The batch dimension is dynamic. Outputs: `scores` (B,), `contributions` (B, S),
`reconstruction` (B, W, S, scaled units) and, with a memory, `attention`.

`OnnxEngine` scores with onnxruntime so `--engine onnx` and the parity tests use the same graph
a user deploys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from memae_ts.engines.bundle import Bundle, load_bundle
from memae_ts.errors import BundleError, MissingDependencyError

OPSET = 18
NORM_EPSILON = 1e-12

__all__ = ["OPSET", "OnnxEngine", "build_onnx_model", "export_onnx"]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            "ONNX export needs the onnx package: pip install 'memae-ts[onnx]'"
        ) from exc
    return onnx


class _Graph:
    """Accumulates nodes and constants with unique names."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str, dtype: Any = np.float32) -> str:
        name = self.name(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _layers(g: _Graph, h: str, layers: list[dict[str, Any]], weights: dict[str, np.ndarray]) -> str:
    for layer in layers:
        op = layer["op"]
        if op == "relu":
            h = g.op("Relu", [h])
        elif op == "leaky_relu":
            h = g.op("LeakyRelu", [h], alpha=float(layer.get("negative_slope", 0.01)))
        elif op == "tanh":
            h = g.op("Tanh", [h])
        elif op == "linear":
            w = g.const(weights[layer["weight"]], "linear_w")
            b = g.const(weights[layer["bias"]], "linear_b")
            h = g.op("Gemm", [h, w, b], transB=1)
        elif op in ("conv1d", "conv_transpose1d"):
            w = g.const(weights[layer["weight"]], f"{op}_w")
            b = g.const(weights[layer["bias"]], f"{op}_b")
            pad = int(layer.get("padding", 0))
            attrs: dict[str, Any] = {
                "strides": [int(layer.get("stride", 1))],
                "pads": [pad, pad],
                "kernel_shape": [int(weights[layer["weight"]].shape[2])],
            }
            if op == "conv1d":
                h = g.op("Conv", [h, w, b], **attrs)
            else:
                attrs["output_padding"] = [int(layer.get("output_padding", 0))]
                h = g.op("ConvTranspose", [h, w, b], **attrs)
        else:  # pragma: no cover - load_bundle refuses unknown ops
            raise BundleError(f"cannot export layer op {op!r}")
    return h


def _memory(g: _Graph, z: str, spec: dict[str, Any], weights: dict[str, np.ndarray]) -> tuple[str, str]:
    """z (..., C) → (ẑ, weights), the five steps of the spec."""
    memory = weights[spec["weight"]].astype(np.float64)
    last = g.const([-1], "axis_last", np.int64)
    if spec["addressing"] == "cosine":
        norms = np.maximum(np.linalg.norm(memory, axis=1, keepdims=True), NORM_EPSILON)
        m_t = g.const((memory / norms).T, "memory_normalised_t")  # row norms precomputed here too
        sq = g.op("ReduceSum", [g.op("Mul", [z, z]), last], keepdims=1)
        norm = g.op("Max", [g.op("Sqrt", [sq]), g.const(NORM_EPSILON, "eps")])
        sim = g.op("MatMul", [g.op("Div", [z, norm]), m_t], "similarity")
    else:
        sim = g.op("MatMul", [z, g.const(memory.T, "memory_t")], "similarity")
    logits = g.op("Div", [sim, g.const(float(spec["temperature"]), "temperature")])
    w = g.op("Softmax", [logits], "softmax", axis=-1)
    lam = float(spec["shrink_threshold"])
    if lam > 0:
        shifted = g.op("Sub", [w, g.const(lam, "lambda")])
        denom = g.op("Add", [g.op("Abs", [shifted]), g.const(float(spec["epsilon"]), "shrink_eps")])
        w = g.op("Div", [g.op("Mul", [g.op("Relu", [shifted]), w]), denom], "shrunk")
        total = g.op("Max", [g.op("ReduceSum", [w, last], keepdims=1), g.const(NORM_EPSILON, "eps")])
        w = g.op("Div", [w, total], "renormalised")
    z_hat = g.op("MatMul", [w, g.const(memory, "memory")], "read")
    return z_hat, w


def build_onnx_model(bundle: Bundle, opset: int = OPSET) -> Any:
    """The ONNX ModelProto of `bundle` (checked with onnx.checker)."""
    onnx = _onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    g = _Graph(onnx)
    network = bundle.network
    window, n_sensors = bundle.window, len(bundle.sensors)
    conv = network["kind"] == "conv"
    scaler = bundle.scaler
    x = g.op("Cast", ["windows"], "windows_f64", to=tp.DOUBLE)
    x = g.op("Sub", [x, g.const(scaler.center, "center", np.float64)])
    x = g.op("Div", [x, g.const(scaler.scale, "scale", np.float64)])
    scaled = g.op("Cast", [x], "scaled", to=tp.FLOAT)
    if conv:
        h = g.op("Transpose", [scaled], perm=[0, 2, 1])
    else:
        h = g.op("Reshape", [scaled, g.const([-1, window * n_sensors], "flat", np.int64)])
    h = _layers(g, h, network["encoder"], bundle.weights)
    attention = None
    memory = network.get("memory")
    if memory is not None:
        z = g.op("Transpose", [h], perm=[0, 2, 1]) if conv else h
        z_hat, attention = _memory(g, z, memory, bundle.weights)
        h = g.op("Transpose", [z_hat], perm=[0, 2, 1]) if conv else z_hat
    h = _layers(g, h, network["decoder"], bundle.weights)
    if conv:
        g.nodes.append(helper.make_node("Transpose", [h], ["reconstruction"], perm=[0, 2, 1]))
    else:
        shape = g.const([-1, window, n_sensors], "window_shape", np.int64)
        g.nodes.append(helper.make_node("Reshape", [h, shape], ["reconstruction"]))
    diff = g.op("Sub", [scaled, "reconstruction"])
    err = g.op("Mul", [diff, diff], "sq_err")
    # The bundle's score reduction (memae_ts.detection.score_reduction), as every engine has it.
    reduction = bundle.scoring
    row_weights = reduction.row_weights(window)
    if row_weights is None:
        g.nodes.append(
            helper.make_node(
                "ReduceMean", [err, g.const([1], "axis_time", np.int64)], ["contributions"], keepdims=0
            )
        )
    else:
        weighted = g.op("Mul", [err, g.const(row_weights.reshape(window, 1), "row_weights", np.float32)])
        g.nodes.append(
            helper.make_node(
                "ReduceSum", [weighted, g.const([1], "axis_time", np.int64)], ["contributions"], keepdims=0
            )
        )
    g.nodes.append(
        helper.make_node(
            "ReduceMax" if reduction.kind == "max" else "ReduceMean",
            ["contributions", g.const([1], "axis_s", np.int64)],
            ["scores"],
            keepdims=0,
        )
    )
    outputs = [
        helper.make_tensor_value_info("scores", tp.FLOAT, ["batch"]),
        helper.make_tensor_value_info("contributions", tp.FLOAT, ["batch", n_sensors]),
        helper.make_tensor_value_info("reconstruction", tp.FLOAT, ["batch", window, n_sensors]),
    ]
    if attention is not None:
        g.nodes.append(helper.make_node("Identity", [attention], ["attention"]))
        att_shape = ["batch", "latent_length", memory["slots"]] if conv else ["batch", memory["slots"]]
        outputs.append(helper.make_tensor_value_info("attention", tp.FLOAT, att_shape))
    graph = helper.make_graph(
        g.nodes,
        "memae_ts",
        [helper.make_tensor_value_info("windows", tp.FLOAT, ["batch", window, n_sensors])],
        outputs,
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="memae-ts")
    model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime releases of the last years
    model.doc_string = f"memae-ts model {bundle.model_version}; threshold {bundle.threshold!r}"
    helper.set_model_props(
        model,
        {"sensors": ",".join(bundle.sensors), "threshold": repr(bundle.threshold), "window": str(window)},
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(bundle_or_path: Bundle | str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the ONNX model of a bundle (or bundle directory) to `out`."""
    onnx = _onnx()
    bundle = bundle_or_path if isinstance(bundle_or_path, Bundle) else load_bundle(bundle_or_path)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(build_onnx_model(bundle), str(target))
    return target


class OnnxEngine:
    """Scores with onnxruntime on the exported graph (same face as the other engines)."""

    name = "onnx"

    def __init__(self, bundle: Bundle, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise MissingDependencyError(
                "the onnx engine needs onnxruntime: pip install 'memae-ts[onnx]'"
            ) from exc
        self.bundle = bundle
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            build_onnx_model(bundle).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _run(self, windows: Any, names: list[str]) -> list[np.ndarray]:
        from memae_ts.engines.engine_numpy import check_windows

        array = check_windows(windows, self.bundle.window, len(self.bundle.sensors))
        feed = {"windows": np.ascontiguousarray(array, dtype=np.float32)}
        return list(self.session.run(names, feed))

    def score(self, windows: Any) -> tuple[np.ndarray, np.ndarray]:
        scores, contributions = self._run(windows, ["scores", "contributions"])
        return scores, contributions

    def reconstruct(self, windows: Any) -> np.ndarray:
        return self._run(windows, ["reconstruction"])[0]

    def attention(self, windows: Any) -> np.ndarray | None:
        if "attention" not in self._outputs:
            return None
        return self._run(windows, ["attention"])[0]

    def analyse(self, windows: Any, encodings: bool = False) -> tuple[np.ndarray | None, ...]:
        """Scores and contributions from onnxruntime; addressing, novelty and encodings from the
        numpy reference on the same bundle (the exported graph has no encoding output), so
        `memae-ts score --engine onnx` writes the same mode and novelty_score columns."""
        from memae_ts.engines.engine_numpy import NumpyEngine

        if not hasattr(self, "_reference"):
            self._reference = NumpyEngine(self.bundle)
        scores, contributions = self.score(windows)
        _, _, attention, novelty, z = self._reference.analyse(windows, encodings)
        return scores, contributions, attention, novelty, z
