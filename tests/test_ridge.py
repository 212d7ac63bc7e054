"""The Ridge banks' solver: exact leave-one-out alpha choice, and the SVD fallback."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from router_core.training.ridge import DEFAULT_ALPHAS, RidgeSolver, fit_ridge_bank


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 30))
    w = rng.normal(size=(30, 3))
    y = x @ w * np.array([1.0, 0.1, 0.0]) + rng.normal(scale=[0.5, 2.0, 1.0], size=(120, 3))
    return x, y


def test_each_target_gets_the_alpha_and_head_of_scikit_learns_leave_one_out_ridge() -> None:
    x, y = _data()
    bank = RidgeSolver(x).fit(y)
    for k in range(y.shape[1]):
        ref = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=True).fit(x, y[:, k])
        assert bank.alpha_[k] == pytest.approx(ref.alpha_)
        np.testing.assert_allclose(bank.coef_[k], ref.coef_, atol=1e-8)
        assert bank.intercept_[k] == pytest.approx(ref.intercept_, abs=1e-8)
    # The targets differ in signal, so the choice is per target, not one alpha for all.
    assert len(set(bank.alpha_.tolist())) > 1


def test_a_divide_and_conquer_svd_that_does_not_converge_falls_back_to_qr_iteration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # numpy's gesdd raised "SVD did not converge" on finite train rows (OpenBLAS, AMD EPYC);
    # r2 train must not die of it.
    x, y = _data(1)
    y[::7, 1] = np.nan  # a column with missing cells: fitted on its own rows, own SVD
    expected = fit_ridge_bank(x, y)
    calls = []

    def fails(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", fails)
    got = fit_ridge_bank(x, y)
    assert len(calls) == 2  # both row sets hit the failing driver and were refactored
    np.testing.assert_allclose(got.coef_, expected.coef_, atol=1e-10)
    np.testing.assert_allclose(got.intercept_, expected.intercept_, atol=1e-10)
    np.testing.assert_array_equal(got.alpha_, expected.alpha_)
