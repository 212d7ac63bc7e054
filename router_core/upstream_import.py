"""Convert the published R2-Router release (`r2_router/`: config.json + joblib Ridge files)
into this project's pickle-free checkpoint format.

This is the only code in the project that unpickles anything, and it does so only when the
caller passes `trust_pickle=True`: a joblib file is a pickle, and loading a pickle runs whatever
code its author put in it. After conversion the gateway loads plain arrays only.

The release documents two ways of asking for a budget (`policies.RELEASE_PROTOCOLS`): its
`generate()` (a system message, no `max_tokens`) and the R2-Bench collection its limited heads
were fitted on (appended to the user turn, `max_tokens = N + 10`). The converted checkpoint
stores the chosen one in every numeric policy, by default `r2bench`, the one its heads measure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import CheckpointError
from .checkpoint import Checkpoint, EmbedderSpec, ModelSpec, save_checkpoint
from .policies import (
    RELEASE_DEFAULT_PROTOCOL,
    RELEASE_PROTOCOLS,
    Policy,
    budget_policy,
    unlimited_policy,
)
from .release_notice import release_provenance, write_release_readme

PICKLE_REFUSAL = (
    "refusing to load the release's .joblib files: they are pickles, and unpickling executes "
    "arbitrary code embedded in the file. Only convert a release you trust, then pass "
    "--trust-pickle; the converted checkpoint is plain arrays and safe to serve."
)
LIMITED_FILE = "limited_score_predictors.joblib"
UNLIMITED_SCORE_FILE = "unlimited_score_predictor.joblib"
UNLIMITED_TOKEN_FILE = "unlimited_token_predictor.joblib"


def import_release(src: str | Path, dest: str | Path, trust_pickle: bool = False,
                   protocol: str = RELEASE_DEFAULT_PROTOCOL) -> Checkpoint:
    """Read the release at `src` (the `r2_router/` folder) and write a checkpoint to `dest`,
    its numeric budgets served under the release protocol named `protocol`."""
    if protocol not in RELEASE_PROTOCOLS:
        raise CheckpointError(f"unknown release protocol {protocol!r}; expected one of "
                              f"{', '.join(RELEASE_PROTOCOLS)}", field="protocol")
    served = RELEASE_PROTOCOLS[protocol]
    root = Path(src)
    config_path = root / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read release config: {exc}", file=str(config_path)) from None
    if not trust_pickle:
        raise CheckpointError(PICKLE_REFUSAL, file=str(root / "checkpoints"))
    import joblib  # only here: the one place a pickle may be opened

    dim = int(config.get("embedding_dim", 1024))
    limits = config.get("token_limits")
    models_cfg: dict[str, Any] = config.get("models", {})
    if not isinstance(limits, list) or not models_cfg:
        raise CheckpointError("config lacks token_limits or models", file=str(config_path),
                              field="token_limits" if not isinstance(limits, list) else "models")
    budgets = [int(b) for b in limits if b != "unlimited"]
    policies: list[Policy] = [budget_policy(b, protocol=served) for b in budgets]
    policies.append(unlimited_policy())
    m, p = len(models_cfg), len(policies)
    arrays = {
        "quality_coef": np.zeros((m, p, dim), np.float32),
        "quality_intercept": np.zeros((m, p), np.float32),
        "tokens_coef": np.zeros((m, p, dim), np.float32),
        "tokens_intercept": np.zeros((m, p), np.float32),
    }
    models = []
    for i, (name, spec) in enumerate(models_cfg.items()):
        models.append(ModelSpec(name, str(spec.get("openrouter_id", name)),
                                float(spec["input_price_per_million"]),
                                float(spec["output_price_per_million"])))
        ckdir = root / "checkpoints" / str(spec.get("checkpoint_dir", name))
        limited = _load(joblib, ckdir / LIMITED_FILE)
        for j, b in enumerate(budgets):
            head = limited.get(f"{b}_score") if isinstance(limited, dict) else None
            if head is None:
                raise CheckpointError("missing head", file=str(ckdir / LIMITED_FILE),
                                      field=f"{b}_score")
            _put(arrays, "quality", i, j, head, dim, ckdir / LIMITED_FILE)
        _put(arrays, "quality", i, p - 1, _load(joblib, ckdir / UNLIMITED_SCORE_FILE), dim,
             ckdir / UNLIMITED_SCORE_FILE)
        _put(arrays, "tokens", i, p - 1, _load(joblib, ckdir / UNLIMITED_TOKEN_FILE), dim,
             ckdir / UNLIMITED_TOKEN_FILE)
    ckpt = Checkpoint(
        embedder=EmbedderSpec(str(config.get("embedding_model", "Qwen/Qwen3-0.6B")), dim, False),
        models=tuple(models), policies=tuple(policies), arrays=arrays,
        head_options={"quality_link": "clip", "tokens_space": "linear",
                      "monotone_quality": False},
        default_lambda=float(config.get("default_lambda", 0.99999)),
        input_tokens="words1.3", name="r2-router-release",
        provenance={**release_provenance(root, str(src), str(dest), str(config.get("method", ""))),
                    "protocol": served.name, "protocol_description": served.describe()},
    )
    save_checkpoint(ckpt, dest)
    write_release_readme(Path(dest), ckpt.provenance, m, p, ckpt.embedder.id)
    return ckpt


def _load(joblib: Any, path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError("release file missing", file=str(path))
    import warnings

    try:
        with warnings.catch_warnings():
            # scikit-learn warns that a Ridge pickled by another version "might lead to invalid
            # results"; only its coef_ and intercept_ arrays are read here, and the converted
            # checkpoint reproduces the release (tests/test_parity.py).
            warnings.filterwarnings("ignore", message=".*Trying to unpickle estimator")
            return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad release file
        raise CheckpointError(f"cannot load: {type(exc).__name__}", file=str(path)) from None


def _put(arrays: dict[str, Any], target: str, i: int, j: int, head: Any, dim: int,
         path: Path) -> None:
    coef = np.asarray(getattr(head, "coef_", None), dtype=np.float32).reshape(-1)
    if coef.shape != (dim,):
        raise CheckpointError(f"coef_ shape {coef.shape} != ({dim},)", file=str(path),
                              field="coef_")
    arrays[f"{target}_coef"][i, j] = coef
    arrays[f"{target}_intercept"][i, j] = float(np.asarray(head.intercept_).reshape(-1)[0])
