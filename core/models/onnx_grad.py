"""Grad-CAM's gradients appended to an ONNX graph, so a heatmap needs no TensorFlow at run time.

ONNX has no automatic differentiation and ONNX Runtime's CPU package has no training. But what Grad-CAM
differentiates is small: a classifier's rest (core.models.stages) from its CAM activation to its logits,
which tf2onnx writes as a few ops (Conv with batch norm folded in, Relu, MaxPool, Add, GlobalAveragePool,
MatMul, Transpose, Squeeze; the lesion-pooling head of core.models.lesion_pooling adds ReduceMax, ReduceSum, a Mul
by the lesion map, a Div by its sum and a Concat). ``add_cam_gradients`` appends each such op's vector-Jacobian
product in plain ONNX ops (a Conv's is the ConvTranspose with the same weights; a MaxPool's scatters into the arg-max
positions its Indices output names), so one run gives the logits, the activation and the gradient of the
chosen class's logit with respect to it: exactly what core.inference.gradcam turns into a heatmap. An op
outside that set raises ``UnsupportedGraph``; the caller then keeps TensorFlow for that bundle's heatmaps.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from core.models.exports import CHOSEN, GRADS, TARGET


_PASS = {"Identity", "Dropout"}
_RESHAPE = {"Squeeze", "Unsqueeze", "Reshape", "Flatten"}


class UnsupportedGraph(ValueError):
    """The graph holds an op (or a use of one) whose gradient is not written here."""


class _Builder:
    """Appends nodes and constants to ``graph`` under names that cannot clash with tf2onnx's."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"camgrad/{hint}_{self.count}"

    def node(self, op: str, inputs: list[str], hint: str = "", outputs: int = 1, **attrs) -> str | list[str]:
        names = [self.name(hint or op) for _ in range(outputs)]
        self.graph.node.append(helper.make_node(op, inputs, names, name=self.name(op), **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def add_cam_gradients(model: onnx.ModelProto, logits: str, activation: str) -> onnx.ModelProto:
    """``model`` with input ``cam_target`` and outputs ``cam_grads`` and ``cam_class``: the gradient of the chosen
    class's ``logits`` column with respect to the tensor named ``activation`` (a graph input or output)."""
    model = shape_inference.infer_shapes(model)
    graph = model.graph
    shapes = _static_shapes(graph)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in graph.node for out in node.output}
    logits = _output_source(producer, logits)

    # Tensors the logits depend on (backwards) and that depend on the activation's source (forwards).
    to_logits = {logits}
    ordered = _topological(graph)
    for node in reversed(ordered):
        if any(out in to_logits for out in node.output):
            to_logits.update(i for i in node.input if i and i not in constants)
    source, chain = activation, []
    while source not in to_logits:  # an output that is an Identity/Transpose copy of a tensor on the path
        node = producer.get(source)
        if node is None or node.op_type not in ("Identity", "Transpose"):
            raise UnsupportedGraph(f"'{activation}' does not feed '{logits}' through the graph")
        chain.insert(0, node)
        source = node.input[0]
    from_source = {source}
    on_path = []
    for node in ordered:
        if any(i in from_source for i in node.input):
            from_source.update(node.output)
            if any(out in to_logits for out in node.output):
                on_path.append(node)

    b = _Builder(graph)
    graph.input.append(helper.make_tensor_value_info(TARGET, TensorProto.INT64, [None]))
    classes = shapes.get(logits, [None, None])[-1]
    if classes is None:
        raise UnsupportedGraph("the number of classes is not static")
    best = b.node("ArgMax", [logits], axis=1, keepdims=0)
    chosen = b.node("Where", [b.node("GreaterOrEqual", [TARGET, b.const(np.array(0, np.int64))]), TARGET, best])
    seed = b.node("OneHot", [chosen, b.const(np.array(classes, np.int64)), b.const(np.array([0, 1], np.float32))],
                  axis=-1)
    grads: dict[str, str] = {logits: seed}
    for node in reversed(on_path):
        _backward(node, grads, b, shapes, constants, from_source, to_logits)
    if source not in grads:
        raise UnsupportedGraph(f"no gradient reaches '{activation}'")
    grad = grads[source]
    for node in chain:  # the same copies the activation output went through
        grad = b.node(node.op_type, [grad], **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    graph.node.append(helper.make_node("Identity", [grad], [GRADS], name="camgrad/grads"))
    graph.node.append(helper.make_node("Identity", [chosen], [CHOSEN], name="camgrad/class"))
    graph.output.append(helper.make_tensor_value_info(GRADS, TensorProto.FLOAT, shapes.get(activation)))
    graph.output.append(helper.make_tensor_value_info(CHOSEN, TensorProto.INT64, [None]))
    onnx.checker.check_model(model)
    return model


def _backward(node, grads: dict[str, str], b: _Builder, shapes: dict, constants: dict, live: set, needed: set) -> None:
    """Adds to ``grads`` the gradient of each of ``node``'s inputs that lies on the path (in ``live`` and ``needed``)."""
    op, dy = node.op_type, grads.get(node.output[0])
    if dy is None:
        return
    wanted = [i for i, name in enumerate(node.input) if name in live and name in needed and name not in constants]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def give(index: int, grad: str) -> None:
        name = node.input[index]
        grads[name] = grad if name not in grads else b.node("Add", [grads[name], grad], "sum")

    if op in _PASS:
        give(0, dy)
    elif op in _RESHAPE:
        give(0, b.node("Reshape", [dy, b.node("Shape", [node.input[0]])]))
    elif op == "Transpose":
        perm = attrs["perm"]
        give(0, b.node("Transpose", [dy], perm=[perm.index(i) for i in range(len(perm))]))
    elif op == "Relu":
        mask = b.node("Cast", [b.node("Greater", [node.output[0], b.const(np.array(0, np.float32))])],
                      to=TensorProto.FLOAT)
        give(0, b.node("Mul", [dy, mask]))
    elif op in ("Add", "Sub", "Mul"):
        out_shape = shapes.get(node.output[0])
        for i in wanted:
            if shapes.get(node.input[i]) != out_shape or out_shape is None:
                raise UnsupportedGraph(f"{op} '{node.name}' broadcasts an input on the gradient path")
            grad = dy
            if op == "Sub" and i == 1:
                grad = b.node("Neg", [dy])
            elif op == "Mul":
                grad = b.node("Mul", [dy, node.input[1 - i]])
            give(i, grad)
    elif op == "Conv":
        give(0, _conv_input_grad(node, dy, attrs, shapes, constants, b))
    elif op == "MaxPool":
        give(0, _max_pool_input_grad(node, dy, b))
    elif op == "GlobalAveragePool":
        spatial = shapes.get(node.input[0], [None])[2:]
        if not spatial or None in spatial:
            raise UnsupportedGraph(f"GlobalAveragePool '{node.name}' has no static spatial size")
        scale = b.const(np.array(1.0 / np.prod(spatial), np.float32))
        give(0, b.node("Mul", [b.node("Expand", [dy, b.node("Shape", [node.input[0]])]), scale]))
    elif op == "ReduceMean":
        in_shape = shapes.get(node.input[0])
        axes = [a % len(in_shape) for a in attrs.get("axes", range(len(in_shape or [])))] if in_shape else None
        if axes is None or len(node.input) > 1 or any(in_shape[a] is None for a in axes):
            raise UnsupportedGraph(f"ReduceMean '{node.name}' has no static axes or sizes")
        if not attrs.get("keepdims", 1):
            dy = b.node("Unsqueeze", [dy, b.const(np.array(axes, np.int64))])
        scale = b.const(np.array(1.0 / np.prod([in_shape[a] for a in axes]), np.float32))
        give(0, b.node("Mul", [b.node("Expand", [dy, b.node("Shape", [node.input[0]])]), scale]))
    elif op in ("ReduceMax", "ReduceSum"):
        in_shape = shapes.get(node.input[0])
        axes = attrs.get("axes") if len(node.input) < 2 else constants.get(node.input[1])
        if in_shape is None or axes is None:
            raise UnsupportedGraph(f"{op} '{node.name}' has no static axes or shape")
        axes = b.const(np.array([int(a) % len(in_shape) for a in np.ravel(axes)], np.int64), "axes")
        kept = (lambda t: t) if attrs.get("keepdims", 1) else (lambda t: b.node("Unsqueeze", [t, axes]))
        dy = b.node("Expand", [kept(dy), b.node("Shape", [node.input[0]])])
        if op == "ReduceSum":
            give(0, dy)
        else:  # to the maximal positions, shared equally among ties (as TensorFlow's gradient of reduce_max)
            hit = b.node("Cast", [b.node("Equal", [node.input[0], kept(node.output[0])])], to=TensorProto.FLOAT)
            give(0, b.node("Mul", [dy, b.node("Div", [hit, b.node("ReduceSum", [hit, axes], keepdims=1)])]))
    elif op == "Div":
        if wanted != [0] or shapes.get(node.input[0]) != shapes.get(node.output[0]):
            raise UnsupportedGraph(f"Div '{node.name}' divides by a tensor on the gradient path, or broadcasts")
        give(0, b.node("Div", [dy, node.input[1]]))
    elif op == "Concat":
        out_shape, in_shapes = shapes.get(node.output[0]), [shapes.get(name) for name in node.input]
        axis = attrs["axis"] % len(out_shape) if out_shape else 0
        sizes = [shape[axis] if shape else None for shape in in_shapes]
        if not out_shape or None in sizes:
            raise UnsupportedGraph(f"Concat '{node.name}' has inputs of no static size")
        parts = b.node("Split", [dy, b.const(np.array(sizes, np.int64), "sizes")], outputs=len(sizes), axis=axis)
        parts = parts if len(sizes) > 1 else [parts]
        for i in wanted:
            give(i, parts[i])
    elif op == "MatMul":
        if wanted != [0] or node.input[1] not in constants or constants[node.input[1]].ndim != 2:
            raise UnsupportedGraph(f"MatMul '{node.name}' is not activation x constant matrix")
        give(0, b.node("MatMul", [dy, b.const(np.ascontiguousarray(constants[node.input[1]].T), "weights_t")]))
    elif op == "Gemm":
        if wanted != [0] or attrs.get("transA", 0) or node.input[1] not in constants:
            raise UnsupportedGraph(f"Gemm '{node.name}' is not activation x constant matrix")
        weights = constants[node.input[1]] * attrs.get("alpha", 1.0)
        weights = weights if attrs.get("transB", 0) else weights.T
        give(0, b.node("MatMul", [dy, b.const(np.ascontiguousarray(weights, np.float32), "weights_t")]))
    elif op == "BatchNormalization":
        scale, var = constants[node.input[1]], constants[node.input[4]]
        factor = (scale / np.sqrt(var + attrs.get("epsilon", 1e-5))).astype(np.float32)
        rank = len(shapes.get(node.input[0]) or [0, 0, 0, 0])
        give(0, b.node("Mul", [dy, b.const(factor.reshape([1, -1] + [1] * (rank - 2)), "bn_factor")]))
    else:
        raise UnsupportedGraph(f"no gradient for ONNX op {op} ('{node.name}')")


def _conv_input_grad(node, dy: str, attrs: dict, shapes: dict, constants: dict, b: _Builder) -> str:
    """A Conv's input gradient: the ConvTranspose of the output gradient with the same weights, padded and
    sized back to the input's shape. At stride 1 that is a Conv with the kernel turned 180 degrees and its
    input and output channels swapped within each group, which ONNX Runtime runs several times faster (its
    grouped ConvTranspose, as in Xception's depthwise convolutions, has no fast kernel)."""
    in_shape, weights = shapes.get(node.input[0]), shapes.get(node.input[1])
    if in_shape is None or weights is None or None in in_shape[2:] or None in weights:
        raise UnsupportedGraph(f"Conv '{node.name}' has no static input or weight shape")
    spatial, kernel = in_shape[2:], weights[2:]
    n = len(spatial)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = list(attrs.get("pads", [0] * 2 * n))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    outs = []
    for d in range(n):
        extent = (kernel[d] - 1) * dilations[d] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-spatial[d] // strides[d])
            total = max((out - 1) * strides[d] + extent - spatial[d], 0)
            small, large = total // 2, total - total // 2
            pads[d], pads[d + n] = (small, large) if auto == "SAME_UPPER" else (large, small)
        elif auto == "VALID":
            pads[d] = pads[d + n] = 0
        outs.append((spatial[d] + pads[d] + pads[d + n] - extent) // strides[d] + 1)
    group = attrs.get("group", 1)
    if all(st == 1 for st in strides) and node.input[1] in constants:
        w = constants[node.input[1]]
        m, c_per_group = w.shape[:2]
        swapped = w.reshape(group, m // group, c_per_group, *kernel).swapaxes(1, 2).reshape(group * c_per_group,
                                                                                              m // group, *kernel)
        flipped = np.ascontiguousarray(np.flip(swapped, axis=tuple(range(2, 2 + n))), np.float32)
        back = [(kernel[d] - 1) * dilations[d] - pads[d + side * n] for side in (0, 1) for d in range(n)]
        if min(back) >= 0:
            return b.node("Conv", [dy, b.const(flipped, "weights_flipped")], strides=strides, dilations=dilations,
                          pads=back, group=group, kernel_shape=kernel)
    output_padding = [spatial[d] - (strides[d] * (outs[d] - 1) + (kernel[d] - 1) * dilations[d] + 1
                                    - pads[d] - pads[d + n]) for d in range(n)]
    if any(p < 0 or p >= max(strides[d], dilations[d]) for d, p in enumerate(output_padding)):
        raise UnsupportedGraph(f"Conv '{node.name}': no ConvTranspose gives back its input shape")
    return b.node("ConvTranspose", [dy, node.input[1]], strides=strides, dilations=dilations, pads=pads,
                  group=group, kernel_shape=kernel, output_padding=output_padding)


def _max_pool_input_grad(node, dy: str, b: _Builder) -> str:
    """A MaxPool's input gradient: each output's gradient added at the input position that was its maximum (as
    TensorFlow's MaxPoolGrad routes it), from the Indices output the forward node is given here."""
    if len(node.output) < 2 or not node.output[1]:
        if len(node.output) < 2:
            node.output.append("")
        node.output[1] = b.name("maxpool_indices")
    shape = b.node("Shape", [node.input[0]])
    flat = b.const(np.array([-1], np.int64))
    zeros = b.node("Reshape", [b.node("ConstantOfShape", [shape], value=helper.make_tensor("zero", TensorProto.FLOAT,
                                                                                           [1], [0.0])), flat])
    scattered = b.node("ScatterElements", [zeros, b.node("Reshape", [node.output[1], flat]), b.node("Reshape", [dy, flat])],
                       axis=0, reduction="add")
    return b.node("Reshape", [scattered, shape])


def _output_source(producer: dict, name: str) -> str:
    """The tensor a graph output copies (through Identity nodes): where its gradient starts."""
    while name in producer and producer[name].op_type == "Identity":
        name = producer[name].input[0]
    return name


def _static_shapes(graph) -> dict[str, list[int | None]]:
    """Each tensor's shape as inferred (None for a dimension that is not a number, the batch)."""
    shapes = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        kind = info.type.tensor_type
        if kind.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
    for t in graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _topological(graph) -> list:
    """The graph's nodes in an order where each comes after the producers of its inputs (tf2onnx's already is;
    sorted anyway, as the ONNX format requires but does not enforce)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise UnsupportedGraph("the graph has a cycle or an input no node produces")
        pending = rest
    return ordered
