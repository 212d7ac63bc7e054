"""Training and evaluating routers on real outcome data (`r2 train`, `r2 eval`).

Modules: `readers` (files and meta), `dataset` (validation, `[query, model, policy]` arrays),
`coverage` (which arms the data covers, sparse arms), `checkpoint_eval` (`r2 eval`),
`policyfile` (instructions and caps of policies), `embed_cache` (embed once, cache on disk),
`ridge` / `mlp` / `variants` (head fitting), `metrics` (AUDC, QNC, peak), `evaluate` (routers
and the lambda sweep), `trainer` (the pipeline), `report` and `plot` (output).
Heavy libraries (scikit-learn, scipy, torch, matplotlib, tqdm) are imported only when used.
"""

from .checkpoint_eval import choose_point_policy, default_point_policy, evaluate
from .coverage import DEFAULT_MIN_ARM_ROWS, coverage_table, drop_sparse_arms
from .dataset import OutcomeData, load_outcomes
from .embed_cache import EmbeddingCache, default_cache_dir, embed_texts
from .errors import DataError
from .evaluate import Arms, Curve, EvalReport, RouterResult, evaluate_predictions, lambda_grid
from .metrics import audc, envelope_at, pareto_envelope, peak, qnc
from .plot import plot_report
from .policyfile import PolicyFile, build_policies, load_policy_file, missing_instructions
from .report import format_table
from .trainer import (
    cross_validate,
    embedder_config,
    make_checkpoint,
    predict_arms,
    prepare,
    train,
)
from .variants import AUTO_VARIANTS, VARIANTS, Variant, fit_variant

__all__ = [
    "AUTO_VARIANTS",
    "DEFAULT_MIN_ARM_ROWS",
    "VARIANTS",
    "Arms",
    "Curve",
    "DataError",
    "EmbeddingCache",
    "EvalReport",
    "OutcomeData",
    "PolicyFile",
    "RouterResult",
    "Variant",
    "audc",
    "build_policies",
    "choose_point_policy",
    "coverage_table",
    "cross_validate",
    "default_cache_dir",
    "default_point_policy",
    "drop_sparse_arms",
    "embed_texts",
    "embedder_config",
    "envelope_at",
    "evaluate",
    "evaluate_predictions",
    "fit_variant",
    "format_table",
    "lambda_grid",
    "load_outcomes",
    "load_policy_file",
    "make_checkpoint",
    "missing_instructions",
    "pareto_envelope",
    "peak",
    "plot_report",
    "predict_arms",
    "prepare",
    "qnc",
    "train",
]
