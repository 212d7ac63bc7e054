"""The closed-form tokenlearn fit behind the static-embedder experiments
(router_core/embedders/static_fit.py): exact on what it can fit, untouched rows stay, the
ridge pulls toward the start table, deterministic."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from helpers import require_shared

from router_core.embedders.static_fit import count_matrix, linear_map, pooled, tokenlearn


def _problem(seed: int = 0) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab, dim = 50, 8
    ids = [list(rng.integers(0, 40, size=rng.integers(3, 12))) for _ in range(30)]  # 40-49 unused
    table = rng.normal(size=(vocab, dim)).astype(np.float32)
    truth = rng.normal(size=(vocab, dim))
    targets = pooled(ids, truth.astype(np.float32)) * rng.uniform(0.5, 3.0, size=(30, 1))
    return ids, table, targets


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    out: np.ndarray = np.sum(a * b, axis=1)
    return out


def test_count_matrix_counts_repeats_and_keeps_empty_rows() -> None:
    m = count_matrix([[1, 1, 3], [], [0]], 4).toarray()
    assert m.tolist() == [[0, 2, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]


def test_pooled_is_the_unit_sum_and_leaves_an_empty_text_zero() -> None:
    table = np.array([[3.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    out = pooled([[0, 1], []], table)
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_tokenlearn_fits_the_targets_directions_and_keeps_unused_rows() -> None:
    ids, table, targets = _problem()
    before = _cos(pooled(ids, table), targets).mean()
    fitted = tokenlearn(ids, targets, table, ridge=1e-6)
    assert _cos(pooled(ids, fitted), targets).min() > 0.999 > before
    assert np.array_equal(fitted[40:], table[40:])  # no text uses them: the start vectors stay


def test_a_larger_ridge_stays_closer_to_the_start_table() -> None:
    ids, table, targets = _problem()
    moves = [float(np.linalg.norm(tokenlearn(ids, targets, table, ridge=r) - table))
             for r in (0.01, 0.1, 1.0, 10.0)]
    assert moves == sorted(moves, reverse=True)
    assert moves[-1] > 0


def test_linear_map_recovers_a_rotating_teacher() -> None:
    ids, table, _ = _problem()
    rotation, _r = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
    targets = 2.0 * pooled(ids, table) @ rotation  # the map fits directions: scale is ignored
    w = linear_map(ids, targets, table, ridge=1e-9)
    assert np.allclose(w, rotation, atol=1e-4)


def test_deterministic() -> None:
    ids, table, targets = _problem(3)
    a = tokenlearn(ids, targets, table @ linear_map(ids, targets, table), 0.1)
    b = tokenlearn(ids, targets, table @ linear_map(ids, targets, table), 0.1)
    assert np.array_equal(a, b)
    assert a.dtype == np.float32


@pytest.mark.parametrize("ridge", [0.0, -1.0])
def test_ridge_must_be_positive(ridge: float) -> None:
    ids, table, targets = _problem()
    with pytest.raises(ValueError, match="ridge"):
        tokenlearn(ids, targets, table, ridge)


def _distill_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "distill_tokenlearn.py"
    spec = importlib.util.spec_from_file_location("distill_tokenlearn", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_distillation_corpus_is_train_prompts_only() -> None:
    """Every corpus text is the routing text of a train prompt whose prompt and query id are
    in no dataset's test split. (A test prompt can still share its routing text, the first
    2000 characters, with a train prompt: a long reading passage both questions quote.)"""
    from router_core.text import routing_text, user_messages
    from router_core.training.dataset import load_outcomes

    data = require_shared("data")
    script = _distill_script()
    texts, sources = script.corpus_texts(data)
    assert len(texts) == len(set(texts)) > 1000
    assert set(sources) == {f"{n}.jsonl.gz" for n in script.DATASETS}
    sets = [load_outcomes([data / name]) for name in sources]
    test = {k for d in sets for q, p, s in zip(d.query_ids, d.prompts, d.splits, strict=True)
            if s != "train" for k in (q, p)}
    allowed = {routing_text(user_messages(p), 2000) for d in sets
               for q, p, s in zip(d.query_ids, d.prompts, d.splits, strict=True)
               if s == "train" and q not in test and p not in test}
    assert set(texts) == allowed
    assert test.isdisjoint(texts)


def test_the_script_refuses_to_overwrite_the_shipped_table() -> None:
    from router_core.embedders.static import data_dir

    with pytest.raises(SystemExit):
        _distill_script().main(["--out", str(data_dir())])
