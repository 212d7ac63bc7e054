"""The `static-minilm` embedder (router_core/embedders/static.py): the shipped table and
tokenizer, the encoder's contract (shape, dtype, unit rows, determinism, odd input), that it
keeps MiniLM's sense of similarity, and that it is chosen by name everywhere an embedder is."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from router_core import EmbedderError, InvalidInputError, make_embedder
from router_core.embedders import KINDS, check_options
from router_core.embedders.static import PREFIX, StaticEmbedder, data_dir

STATIC_ID = "static-minilm-l6-v2-m2v256-int8"
TEXTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a linked list.",
    "Explain quantum entanglement to a five-year-old.",
    "hi",
    "Was ist der Unterschied zwischen Wetter und Klima?",
    "SELECT name FROM users WHERE id = 1;",
]


@pytest.fixture(scope="module")
def static() -> Iterator[StaticEmbedder]:
    e = StaticEmbedder()
    yield e
    e.close()


def test_registered_by_name_with_its_shipped_identity() -> None:
    assert "static-minilm" in KINDS
    e = make_embedder({"kind": "static-minilm"})
    try:
        assert isinstance(e, StaticEmbedder)
        assert (e.id, e.dim, e.normalized) == (STATIC_ID, 256, True)
        manifest = json.loads((data_dir() / f"{PREFIX}.json").read_text())
        assert manifest["id"] == e.id and manifest["dim"] == e.dim
    finally:
        e.close()


def test_unknown_option_is_named() -> None:
    with pytest.raises(InvalidInputError) as err:
        check_options({"kind": "static-minilm", "threads": 2})
    assert err.value.param == "embedder.threads"
    check_options({"kind": "static-minilm", "max_chars": 500, "max_tokens": 64})


def test_shape_dtype_and_unit_rows(static: StaticEmbedder) -> None:
    out = static.embed(TEXTS)
    assert out.shape == (len(TEXTS), 256) and out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert static.embed([]).shape == (0, 256)


def test_deterministic_and_independent_of_the_batch(static: StaticEmbedder) -> None:
    batch = static.embed(TEXTS)
    again = StaticEmbedder().embed(TEXTS)
    one_by_one = np.stack([static.embed([t])[0] for t in TEXTS])
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_allclose(batch, one_by_one, atol=1e-6)
    reordered = static.embed(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(batch, reordered, atol=1e-6)


def test_empty_whitespace_and_unknown_text_get_one_fixed_unit_vector(
        static: StaticEmbedder) -> None:
    out = static.embed(["", "   \n\t", "\u2603\u2603", "[UNK]", "hello"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])  # no known piece at all
    assert not np.allclose(out[4], out[0])


def test_unicode_and_case(static: StaticEmbedder) -> None:
    out = static.embed(["日本の首都はどこですか？", "Combien de temps faut-il pour cuire un œuf ?",
                        "HELLO WORLD", "hello world", "héllo wörld", "emoji 😀 in text"])
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the BERT normaliser lower-cases and strips accents, as MiniLM's tokenizer does
    np.testing.assert_allclose(out[2], out[3], atol=1e-6)
    np.testing.assert_allclose(out[3], out[4], atol=1e-6)
    assert float(out[0] @ out[3]) < 0.9  # CJK characters are known pieces, not [UNK]


def test_very_long_text_is_cut_to_max_chars_then_max_tokens() -> None:
    e = StaticEmbedder(max_chars=300, max_tokens=512)
    base = "The committee reviewed the proposal for the new bridge. " * 6
    long = base + "Completely different tail about quantum chromodynamics. " * 5000
    np.testing.assert_allclose(e.embed([long])[0], e.embed([long[:300]])[0], atol=1e-6)
    few = StaticEmbedder(max_chars=10**7, max_tokens=8)
    np.testing.assert_allclose(few.embed([long])[0], few.embed([base])[0], atol=1e-6)
    assert few.embed(["x" * 1_000_000]).shape == (1, 256)


def test_keeps_minilms_sense_of_similarity(static: StaticEmbedder) -> None:
    a, b, c = static.embed(["How do I reverse a linked list in Python?",
                            "Python code to reverse a singly linked list",
                            "What are the side effects of ibuprofen?"])
    assert float(a @ b) > float(a @ c) + 0.2


PAIRS = [
    ("How do I reverse a linked list in Python?", "Python code to reverse a singly linked list"),
    ("What are the side effects of ibuprofen?", "Is ibuprofen bad for your stomach?"),
    ("Who won the 2018 FIFA World Cup?", "Which country won the football world cup in 2018?"),
    ("Explain the difference between TCP and UDP.", "How does TCP differ from UDP networking?"),
    ("Give me a recipe for vegan chocolate chip cookies.",
     "How to bake cookies without eggs or butter?"),
    ("Solve for x: 3x + 7 = 22.", "What is x if 3x plus 7 equals 22?"),
]


def test_agrees_with_minilm_on_which_texts_are_alike(static: StaticEmbedder) -> None:
    """The distilled space is not MiniLM's, but its pairwise similarities follow MiniLM's
    (paraphrase pairs close, different topics far): 0.93 correlation when written."""
    texts = [t for pair in PAIRS for t in pair]
    onnx = make_embedder({"kind": "local"})
    try:
        m = onnx.embed(texts)
    finally:
        onnx.close()
    s = static.embed(texts)
    upper = np.triu_indices(len(texts), 1)
    corr = np.corrcoef((s @ s.T)[upper], (m @ m.T)[upper])[0, 1]
    assert corr > 0.8
    paraphrase = np.diag(s @ s.T, 1)[::2]
    mask = np.ones((len(texts), len(texts)), bool)
    mask[np.arange(0, len(texts), 2), np.arange(1, len(texts), 2)] = False
    assert paraphrase.min() > (s @ s.T)[upper][mask[upper]].max() - 0.1


def test_rejects_a_bare_string_and_refuses_after_close() -> None:
    e = StaticEmbedder()
    with pytest.raises(TypeError):
        e.embed("one string")  # type: ignore[arg-type]
    e.close()
    with pytest.raises(EmbedderError, match="closed"):
        e.embed(["x"])


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        make_embedder({"kind": "static-minilm", "max_tokens": 0})


def _copy_data(tmp_path: Path) -> Path:
    for name in (f"{PREFIX}.json", f"{PREFIX}.npz", f"{PREFIX}.tokenizer.json.gz"):
        shutil.copy(data_dir() / name, tmp_path / name)
    return tmp_path


def test_refuses_a_table_whose_sha256_differs(tmp_path: Path) -> None:
    d = _copy_data(tmp_path)
    with np.load(d / f"{PREFIX}.npz") as arrays:
        vectors, scales = arrays["vectors"].copy(), arrays["scales"]
    vectors[100, 0] ^= 1
    np.savez_compressed(d / f"{PREFIX}.npz", vectors=vectors, scales=scales)
    with pytest.raises(EmbedderError, match="sha256"):
        StaticEmbedder(path=str(d))


def test_missing_files_are_named(tmp_path: Path) -> None:
    d = _copy_data(tmp_path)
    (d / f"{PREFIX}.tokenizer.json.gz").unlink()
    with pytest.raises(EmbedderError, match="missing"):
        StaticEmbedder(path=str(d))
    (d / f"{PREFIX}.json").write_text("{not json")
    with pytest.raises(EmbedderError, match="manifest"):
        StaticEmbedder(path=str(d))


def test_builds_and_embeds_with_the_network_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    e = StaticEmbedder()
    assert e.embed(["offline"]).shape == (1, 256)


def test_shipped_files_carry_the_licence_notice() -> None:
    notice = (data_dir() / "NOTICE.md").read_text()
    assert "static-minilm" in notice and "Apache" in notice
