"""The vectorised scorer on hand-built checkpoints: tie-breaking, constraints, input errors,
batch == one-by-one, the monotone option and MLP heads against a naive numpy reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from router_core import (
    Checkpoint,
    Constraints,
    EmbedderSpec,
    InvalidInputError,
    ModelSpec,
    NoFeasibleCandidateError,
    Policy,
    Router,
    Scorer,
    UnknownModelError,
    budget_policy,
    unlimited_policy,
)
from router_core.scoring import RankedCandidates

DIM = 3
BUDGETS = (10, 100)


def const_checkpoint(quality: dict[str, list[float]],
                     prices: dict[str, tuple[float, float]] | None = None,
                     unlimited_tokens: float = 50.0, **head_options: Any) -> Checkpoint:
    """Heads that ignore the embedding: quality[model] = one value per (10, 100, unlimited)."""
    names = tuple(quality)
    policies = (*(budget_policy(b) for b in BUDGETS), unlimited_policy())
    m, p = len(names), len(policies)
    prices = prices or {}
    return Checkpoint(
        embedder=EmbedderSpec("test", DIM, True),
        models=tuple(ModelSpec(n, n, *prices.get(n, (0.0, 0.0))) for n in names),
        policies=policies,
        arrays={"quality_coef": np.zeros((m, p, DIM), np.float32),
                "quality_intercept": np.array([quality[n] for n in names], np.float32),
                "tokens_coef": np.zeros((m, p, DIM), np.float32),
                "tokens_intercept": np.full((m, p), unlimited_tokens, np.float32)},
        head_options=dict(head_options),
    )


def random_checkpoint(seed: int = 0, models: int = 4, dim: int = 16) -> Checkpoint:
    rng = np.random.default_rng(seed)
    policies = (*(budget_policy(b) for b in (10, 50, 200, 1000)), unlimited_policy())
    m, p = models, len(policies)
    return Checkpoint(
        embedder=EmbedderSpec("test", dim, True),
        models=tuple(ModelSpec(f"m{i}", f"m{i}", float(rng.uniform(0.05, 5)),
                               float(rng.uniform(0.05, 15))) for i in range(m)),
        policies=policies,
        arrays={"quality_coef": rng.normal(0, 0.2, (m, p, dim)).astype(np.float32),
                "quality_intercept": rng.uniform(0.2, 0.8, (m, p)).astype(np.float32),
                "tokens_coef": rng.normal(0, 100, (m, p, dim)).astype(np.float32),
                "tokens_intercept": rng.uniform(50, 2000, (m, p)).astype(np.float32)},
    )


EMB = np.ones(DIM, np.float32) / np.sqrt(DIM)


def picks(decision: Any) -> list[tuple[str, int | str]]:
    return [(c.model, c.budget) for c in decision.candidates]


# -- tie-breaking ---------------------------------------------------------------------------
def test_exact_ties_go_to_first_model_then_smallest_budget_then_unlimited() -> None:
    scorer = Scorer(const_checkpoint({"a": [0.5, 0.5, 0.5], "b": [0.5, 0.5, 0.5]}))
    d = scorer.decide(EMB, 10, 0.0)
    assert (d.model, d.budget) == ("a", 10)
    assert picks(d) == [("a", 10), ("a", 100), ("a", "unlimited"),
                        ("b", 10), ("b", 100), ("b", "unlimited")]


def test_tie_between_budget_and_unlimited_goes_to_the_budget() -> None:
    scorer = Scorer(const_checkpoint({"a": [0.2, 0.9, 0.9], "b": [0.9, 0.9, 0.9]}))
    d = scorer.decide(EMB, 10, 0.0)
    assert (d.model, d.budget) == ("a", 100)
    assert picks(d)[:3] == [("a", 100), ("a", "unlimited"), ("b", 10)]


def test_candidates_are_ranked_by_utility_and_chosen_is_first() -> None:
    scorer = Scorer(random_checkpoint(3))
    d = scorer.decide(np.linspace(-1, 1, 16), 300, 0.5)
    utils = [c.utility for c in d.candidates]
    assert utils == sorted(utils, reverse=True)
    assert d.candidates[0] == d.chosen
    assert len(d.candidates) == 4 * 5


def test_lazy_candidates_compare_equal_to_the_eager_tuple() -> None:
    scorer = Scorer(random_checkpoint(4))
    d = scorer.decide(np.linspace(-1, 1, 16), 300, 0.5)
    assert isinstance(d.candidates, RankedCandidates)
    eager = tuple(d.candidates)
    assert d.candidates == eager and hash(d.candidates) == hash(eager)
    assert d.candidates[1:3] == eager[1:3]


# -- constraints ----------------------------------------------------------------------------
def test_allowed_models_restricts_the_pick_and_the_candidates() -> None:
    scorer = Scorer(const_checkpoint({"a": [0.9, 0.9, 0.9], "b": [0.1, 0.2, 0.3]}))
    d = scorer.decide(EMB, 10, 0.0, Constraints(allowed_models=("b",)))
    assert (d.model, d.budget) == ("b", "unlimited")
    assert {c.model for c in d.candidates} == {"b"}


def test_max_budget_drops_larger_budgets_but_keeps_unlimited() -> None:
    scorer = Scorer(const_checkpoint({"a": [0.1, 0.9, 0.5]}))
    assert scorer.decide(EMB, 10, 0.0).budget == 100
    d = scorer.decide(EMB, 10, 0.0, Constraints(max_budget=50))
    assert d.budget == "unlimited"
    assert picks(d) == [("a", "unlimited"), ("a", 10)]


def test_max_cost_usd_excludes_candidates_costing_more() -> None:
    # Budget arms cost their full budget: a: 10 and 100 output tokens at $10/M -> $1e-4, $1e-3.
    ckpt = const_checkpoint({"a": [0.5, 0.9, 0.8]}, prices={"a": (0.0, 10.0)},
                            unlimited_tokens=60.0)
    scorer = Scorer(ckpt)
    assert scorer.decide(EMB, 10, 0.0).budget == 100
    d = scorer.decide(EMB, 10, 0.0, Constraints(max_cost_usd=7e-4))
    assert d.budget == "unlimited"
    assert d.chosen.predicted_cost_usd == pytest.approx(60 * 10.0 / 1e6)
    assert all(c.predicted_cost_usd <= 7e-4 for c in d.candidates)


@pytest.mark.parametrize("constraints", [
    Constraints(allowed_models=()),
    Constraints(max_cost_usd=0.0),
])
def test_empty_feasible_set_raises_no_feasible_candidate(constraints: Constraints) -> None:
    ckpt = const_checkpoint({"a": [0.5, 0.5, 0.5]}, prices={"a": (1.0, 1.0)})
    with pytest.raises(NoFeasibleCandidateError):
        Scorer(ckpt).decide(EMB, 10, 0.5, constraints)


def test_batch_routing_names_the_infeasible_row() -> None:
    router = Router(const_checkpoint({"a": [0.5, 0.5, 0.5]}, prices={"a": (1.0, 1.0)}))
    with pytest.raises(NoFeasibleCandidateError, match="row 1"):
        router.route_embeddings(np.stack([EMB, EMB]), [0, 10_000_000], 0.5,
                                Constraints(max_cost_usd=1e-4))


def test_unknown_allowed_model_raises_unknown_model_error() -> None:
    scorer = Scorer(const_checkpoint({"a": [0.5, 0.5, 0.5]}))
    with pytest.raises(UnknownModelError, match="nope") as err:
        scorer.decide(EMB, 10, 0.5, Constraints(allowed_models=("a", "nope")))
    assert err.value.param == "models"


# -- input errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("embedding", [
    np.array([np.nan, 0.0, 0.0]), np.array([np.inf, 0.0, 0.0]), np.zeros(DIM + 1),
    np.zeros((2, DIM - 1)), np.zeros((1, 1, DIM)), ["a", "b", "c"],
])
def test_bad_embeddings_raise_invalid_input(embedding: Any) -> None:
    scorer = Scorer(const_checkpoint({"a": [0.5, 0.5, 0.5]}))
    with pytest.raises(InvalidInputError) as err:
        scorer.decide(embedding, 10, 0.5)
    assert err.value.param == "embeddings"


@pytest.mark.parametrize("lam", [-0.01, 1.01, float("nan"), float("inf"), "abc", None])
def test_lambda_outside_unit_interval_raises_invalid_input(lam: Any) -> None:
    scorer = Scorer(const_checkpoint({"a": [0.5, 0.5, 0.5]}))
    with pytest.raises(InvalidInputError) as err:
        scorer.decide(EMB, 10, lam)
    assert err.value.param == "lambda"
    with pytest.raises(InvalidInputError):
        scorer.pick(np.stack([EMB, EMB]), 10, lam)


@pytest.mark.parametrize("tokens", [-1, float("nan"), [1, 2, 3]])
def test_bad_input_tokens_raise_invalid_input(tokens: Any) -> None:
    scorer = Scorer(const_checkpoint({"a": [0.5, 0.5, 0.5]}))
    with pytest.raises(InvalidInputError) as err:
        scorer.pick(np.stack([EMB, EMB]), tokens, 0.5)
    assert err.value.param == "input_tokens"


def test_lambda_endpoints_are_accepted() -> None:
    ckpt = const_checkpoint({"a": [0.5, 0.5, 0.5], "b": [0.9, 0.9, 0.9]},
                            prices={"a": (0.1, 0.1), "b": (10.0, 10.0)})
    assert Scorer(ckpt).decide(EMB, 10, 0.0).model == "b"  # quality only
    assert Scorer(ckpt).decide(EMB, 10, 1.0).model == "a"  # cost only


# -- batch == one by one --------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 0.999, 1.0])
def test_batch_pick_equals_one_by_one_decide(lam: float) -> None:
    ckpt = random_checkpoint(1)
    router = Router(ckpt)
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(64, 16)).astype(np.float32)
    tokens = rng.integers(1, 5000, size=64)
    constraints = Constraints(allowed_models=("m0", "m2", "m3"), max_budget=500)
    batch = router.route_embeddings(emb, tokens, lam, constraints)
    single = [router.decide(e, int(t), lam, constraints).chosen
              for e, t in zip(emb, tokens, strict=True)]
    assert [(c.model, c.budget) for c in batch] == [(c.model, c.budget) for c in single]
    # BLAS sums a GEMM and a GEMV in different orders: equal up to the last bits.
    for b, s in zip(batch, single, strict=True):
        assert b.predicted_quality == pytest.approx(s.predicted_quality, rel=1e-12, abs=1e-15)
        assert b.predicted_cost_usd == pytest.approx(s.predicted_cost_usd, rel=1e-12)
        assert b.utility == pytest.approx(s.utility, rel=1e-12, abs=1e-15)


# -- head options ---------------------------------------------------------------------------
def test_monotone_quality_makes_quality_non_decreasing_in_the_budget() -> None:
    q = {"a": [0.8, 0.3, 0.1]}
    plain = Scorer(const_checkpoint(q)).predict(EMB, 10).quality[0, 0]
    mono = Scorer(const_checkpoint(q, monotone_quality=True)).predict(EMB, 10).quality[0, 0]
    np.testing.assert_allclose(plain, [0.8, 0.3, 0.1], rtol=1e-6)
    np.testing.assert_allclose(mono, [0.8, 0.8, 0.1], rtol=1e-6)  # unlimited untouched


def test_sigmoid_link_and_log1p_tokens() -> None:
    ckpt = const_checkpoint({"a": [0.0, 2.0, -2.0]}, unlimited_tokens=float(np.log1p(99.0)),
                            quality_link="sigmoid", tokens_space="log1p")
    s = Scorer(ckpt).predict(EMB, 10)
    np.testing.assert_allclose(s.quality[0, 0], 1 / (1 + np.exp(-np.array([0.0, 2.0, -2.0]))),
                               rtol=1e-6)
    np.testing.assert_allclose(s.tokens[0, 0], [10, 100, 99.0], rtol=1e-5)


def mlp_checkpoint(hidden: list[int], seed: int = 0) -> Checkpoint:
    rng = np.random.default_rng(seed)
    policies = (Policy("short", max_tokens=300), Policy("long"), unlimited_policy())
    m, p, d = 3, len(policies), 8
    sizes = [d, *hidden, 1]
    arrays = {}
    for target, scale in (("quality", 0.5), ("tokens", 200.0)):
        for i in range(len(sizes) - 1):
            arrays[f"{target}_w{i}"] = rng.normal(0, 1, (m * p, sizes[i], sizes[i + 1])).astype(
                np.float32)
            arrays[f"{target}_b{i}"] = rng.normal(0, 1, (m * p, sizes[i + 1])).astype(np.float32)
        arrays[f"{target}_w{len(sizes) - 2}"] *= scale
    return Checkpoint(
        embedder=EmbedderSpec("test", d, True),
        models=tuple(ModelSpec(f"m{i}", f"m{i}", 1.0 + i, 2.0 + 3 * i) for i in range(m)),
        policies=policies, arrays=arrays, head_kind="mlp", head_options={"hidden": hidden},
    )


def naive_mlp(ckpt: Checkpoint, target: str, e: np.ndarray, head: int) -> float:
    a = ckpt.arrays
    n_layers = len(ckpt.head_options["hidden"]) + 1
    h = e.astype(np.float64)
    for i in range(n_layers):
        h = h @ a[f"{target}_w{i}"][head].astype(np.float64) + a[f"{target}_b{i}"][head]
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
    return float(h[0])


@pytest.mark.parametrize("hidden", [[5], [6, 4]])
def test_mlp_heads_match_a_naive_numpy_reference(hidden: list[int]) -> None:
    ckpt = mlp_checkpoint(hidden)
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(5, 8))
    scores = Scorer(ckpt).predict(emb, 100)
    m, p = 3, 3
    for n in range(5):
        for i in range(m):
            for j in range(p):
                head = i * p + j
                q = min(max(naive_mlp(ckpt, "quality", emb[n], head), 0.0), 1.0)
                t = max(naive_mlp(ckpt, "tokens", emb[n], head), 0.0)
                if ckpt.policies[j].max_tokens is not None:
                    t = min(t, ckpt.policies[j].max_tokens)
                cost = (100 * ckpt.models[i].input_price_per_million
                        + t * ckpt.models[i].output_price_per_million) / 1e6
                assert scores.quality[n, i, j] == pytest.approx(q, rel=1e-9, abs=1e-12)
                assert scores.tokens[n, i, j] == pytest.approx(t, rel=1e-9, abs=1e-9)
                assert scores.cost[n, i, j] == pytest.approx(cost, rel=1e-9, abs=1e-15)


def test_mlp_decision_is_the_argmax_of_the_reference_utility() -> None:
    ckpt = mlp_checkpoint([6, 4], seed=2)
    scorer = Scorer(ckpt)
    e = np.random.default_rng(5).normal(size=8)
    s = scorer.predict(e, 100)
    util = 0.5 * s.quality[0] - 0.5 * s.cost[0]
    i, j = np.unravel_index(int(np.argmax(util)), util.shape)
    d = scorer.decide(e, 100, 0.5)
    assert (d.model, d.budget) == (f"m{i}", ckpt.policies[j].label)
