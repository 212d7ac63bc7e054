"""`onnx_fuse.fuse_minilm`: the exported MiniLM's attention and GELU blocks become contrib ops
without changing what the graph computes (checked on the fp32 graph, before quantisation,
where the comparison is exact up to float rounding), and a graph of another shape is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from router_core import EmbedderError
from router_core.embedders.local_onnx import verified_model_file
from router_core.embedders.local_q8 import fold_to_fp32
from router_core.embedders.onnx_fuse import fuse_minilm, truncate_layers


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `local` file folded to fp32, as `local_q8.derive` starts from."""
    out = tmp_path_factory.mktemp("fuse") / "fp32.onnx"
    fold_to_fp32(verified_model_file()[0], out)
    return out


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _pooled(session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feeds["token_type_ids"] = np.zeros_like(ids)
    (hidden,) = session.run(["last_hidden_state"], feeds)
    weights = mask[..., None].astype(np.float32)
    vectors = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_fused_graph_computes_the_same_vectors_with_a_third_of_the_nodes(
        fp32_model: Path) -> None:
    original = onnx.load(str(fp32_model))
    fused = onnx.load(str(fp32_model))
    fuse_minilm(fused)
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("MultiHeadAttention") == 6 and ops.count("Gelu") == 6
    assert "Softmax" not in ops and "Erf" not in ops
    assert len(ops) < len(original.graph.node) / 2
    # a padded batch of three lengths: the key-padding mask must mask exactly the padding
    rng = np.random.default_rng(7)
    lengths = [35, 9, 61]
    ids = np.zeros((3, max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1000, 20000, n)
        ids[row, 0], ids[row, n - 1] = 101, 102
        mask[row, :n] = 1
    before = _pooled(_session(fp32_model), ids, mask)
    after = _pooled(_session(fused), ids, mask)
    assert np.min(np.sum(before * after, axis=1)) > 1 - 1e-5
    # a row's vector does not depend on the padding added for its batch-mates
    alone = _pooled(_session(fused), ids[1:2, :9], mask[1:2, :9])
    assert float(np.sum(alone[0] * after[1])) > 1 - 1e-5


def test_a_graph_of_another_shape_is_refused_not_half_rewritten() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph)
    with pytest.raises(EmbedderError, match="found 0 attention blocks and 0 GELUs, expected 6"):
        fuse_minilm(model)
    assert [n.op_type for n in model.graph.node] == ["Softmax"]


def test_a_cut_graph_outputs_that_layer_and_runs_only_the_layers_before_it(
        fp32_model: Path) -> None:
    full = onnx.load(str(fp32_model))
    fuse_minilm(full)
    norms = [n for n in full.graph.node if n.op_type == "LayerNormalization"]
    cut = onnx.ModelProto()
    cut.CopyFrom(full)
    truncate_layers(cut, 3)
    ops = [n.op_type for n in cut.graph.node]
    assert ops.count("MultiHeadAttention") == 3 and ops.count("Gelu") == 3
    # the full graph with layer 3's output exposed gives the same tensor
    full.graph.output.append(helper.make_tensor_value_info(norms[6].output[0],
                                                           TensorProto.FLOAT, None))
    ids = np.array([[101, 7592, 2088, 2003, 1037, 3231, 102]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    inputs = {i.name for i in _session(cut).get_inputs()}
    if "token_type_ids" in inputs:
        feeds["token_type_ids"] = np.zeros_like(ids)
    (hidden,) = _session(cut).run(["last_hidden_state"], feeds)
    _, layer3 = _session(full).run(["last_hidden_state", norms[6].output[0]], feeds)
    np.testing.assert_allclose(hidden, layer3, atol=1e-5)
    unchanged = onnx.ModelProto()
    unchanged.CopyFrom(cut)
    with pytest.raises(ValueError, match="layers must be within 1..6"):
        truncate_layers(unchanged, 7)
