"""Training and evaluating checkpoints on outcome data: the library behind `r2 train` / `r2 eval`.

`train` loads the data, embeds every prompt once (through the cache), chooses a head variant
by k-fold cross-validation on the train split (validation AUDC of the r2 router; test queries
are never looked at), fits it on the whole train split and writes a checkpoint with prices,
policies and the validation tables (of the variants, and of the point router per policy) in
its provenance. Scoring a checkpoint on the test split is `checkpoint_eval.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..checkpoint import Checkpoint, EmbedderSpec, ModelSpec, save_checkpoint
from ..embedders import Embedder, make_embedder
from ..policies import DEFAULT_BUDGET_INSTRUCTION, Policy
from ..router import policy_input_tokens
from ..scoring import Scorer
from ..text import routing_text, user_messages
from ..tradeoff import calibrate
from .coverage import DEFAULT_MIN_ARM_ROWS, coverage_table, drop_sparse_arms, sparsest_arms
from .dataset import OutcomeData, load_outcomes
from .embed_cache import EmbeddingCache, default_cache_dir, embed_texts
from .errors import DataError
from .evaluate import Arms, r2_audc
from .input_tokens import (
    InputTokenFit,
    compare_input_tokens,
    conversation_tokens,
    fit_input_tokens,
)
from .interpolate import interpolate_budgets
from .policyfile import (
    PolicyFile,
    build_policies,
    load_policy_file,
    missing_instructions,
    with_collected,
)
from .readers import meta_path
from .variants import AUTO_VARIANTS, VARIANTS, FittedHeads, Variant, applicable, fit_variant

F64 = npt.NDArray[np.float64]
Log = Callable[[str], None]
INPUT_TOKENS = "tokenizer"


def embedder_config(name: str) -> dict[str, Any]:
    """`--embedder` value: a kind (`local`, `hash`, ...) or a JSON object of the config."""
    text = name.strip()
    if text.startswith("{"):
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"--embedder is not valid JSON: {exc.msg}", field="embedder") from None
        if not isinstance(cfg, dict):
            raise DataError("--embedder JSON must be an object", field="embedder")
        return cfg
    return {"kind": text}


@dataclass
class Prepared:
    data: OutcomeData
    embeddings: F64
    input_tokens: F64
    #: Per model, billed input tokens per counted token (`fit_input_tokens`); None: all 1.
    input_scales: F64 | None = None


def prepare(data: OutcomeData, embedder: Embedder, cache_dir: str | Path | None,
            progress: bool = True, system_prompt: str | None = None,
            composition: str | None = None) -> Prepared:
    """Embed the routing text of each prompt (the user turn, after `system_prompt` if given)
    through the cache, and count the conversation's input tokens as the gateway does."""
    cache = EmbeddingCache(cache_dir or default_cache_dir(), embedder.id, embedder.dim)
    extra = {} if composition is None else {"composition": composition}
    texts = [routing_text(user_messages(p, system_prompt), embedder.max_chars, **extra)
             for p in data.prompts]
    emb = embed_texts(embedder, texts, cache, progress=progress).astype(np.float64)
    tokens = conversation_tokens(data.prompts, system_prompt, INPUT_TOKENS)
    return Prepared(data, emb, tokens)


def fit_policies(data: OutcomeData, prep: Prepared, pfile: PolicyFile | None,
                 file: str = "meta") -> tuple[InputTokenFit, PolicyFile | None]:
    """The policies `r2 train` fits with: `pfile` completed by the policies the data's meta
    recorded, with each policy's input overhead and each model's input-token scale fitted on
    `prep`'s counts (the scales are set on `prep`). Also the completed policies file."""
    pfile = with_collected(pfile, data.collected_policies, file=file)
    fit = fit_input_tokens(build_policies(data.policies, pfile), data, prep.input_tokens,
                           INPUT_TOKENS)
    prep.input_scales = fit.scales
    return fit, pfile


def make_checkpoint(heads: FittedHeads, data: OutcomeData, policies: Sequence[Policy],
                    embedder: EmbedderSpec, name: str = "r2-checkpoint",
                    provenance: Mapping[str, Any] | None = None,
                    input_scales: npt.ArrayLike | None = None) -> Checkpoint:
    scales = np.ones(len(data.models)) if input_scales is None else np.asarray(
        input_scales, dtype=np.float64).reshape(-1)
    models = tuple(ModelSpec(m, m, data.prices[m].input_per_million,
                             data.prices[m].output_per_million, float(scales[i]))
                   for i, m in enumerate(data.models))
    return Checkpoint(embedder=embedder, models=models, policies=tuple(policies),
                      arrays=dict(heads.arrays), head_kind=heads.kind,
                      head_options=dict(heads.options), input_tokens=INPUT_TOKENS, name=name,
                      provenance=dict(provenance or {}))


def checkpoint_arms(ckpt: Checkpoint) -> set[tuple[str, str]]:
    """`(model, policy label)` of every arm the checkpoint can choose."""
    observed = ckpt.arrays.get("arm_observed")
    return {(m, str(p.label)) for i, m in enumerate(ckpt.model_names)
            for j, p in enumerate(ckpt.policies) if observed is None or observed[i, j] > 0.5}


def predict_arms(ckpt: Checkpoint, data: OutcomeData, embeddings: F64,
                 input_tokens: F64) -> tuple[F64, F64]:
    """Predicted quality and cost `[N, A]` for the data's present arms (the order of `arms_of`);
    NaN for an arm the checkpoint has no head for (no router picks it)."""
    models = {m: i for i, m in enumerate(ckpt.model_names)}
    labels = {str(p.label): j for j, p in enumerate(ckpt.policies)}
    cells = []
    for i, j in zip(*data.arm_cells(), strict=True):
        m, p = data.models[i], str(data.policies[j])
        if m not in models or p not in labels:
            raise DataError(f"the checkpoint has no head for model {m!r} at policy {p!r}",
                            field="model" if m not in models else "policy",
                            fix="restrict with --models/--policies to the checkpoint's arms")
        cells.append((models[m], labels[p]))
    mi, pj = (np.array(v, dtype=np.intp) for v in zip(*cells, strict=True))
    scores = Scorer(ckpt, policy_input_tokens(ckpt, ckpt.input_tokens)).predict(embeddings,
                                                                                input_tokens)
    q, c = scores.quality[:, mi, pj], scores.cost[:, mi, pj]
    have = checkpoint_arms(ckpt)
    missing = [k for k, (i, j) in enumerate(zip(mi, pj, strict=True))
               if (ckpt.model_names[i], str(ckpt.policies[j].label)) not in have]
    q[:, missing] = np.nan
    return q, c


def arms_of(data: OutcomeData) -> Arms:
    mi, pj = data.arm_cells()
    return Arms(data.arm_labels(), data.score[:, mi, pj], data.cost[:, mi, pj])


def policy_masks(data: OutcomeData) -> dict[str, npt.NDArray[np.bool_]]:
    """Per policy label, which of the flat present arms belong to it (the point router's)."""
    _, pj = data.arm_cells()
    return {str(p): pj == j for j, p in enumerate(data.policies) if (pj == j).any()}


@dataclass
class Validation:
    """Fold AUDCs on the train split: of r2 per variant, of the point router per variant and
    policy, and the validation queries of every fold."""

    r2: dict[str, list[float]]
    point: dict[str, dict[str, list[float]]]
    queries: list[int]


def query_folds(n_queries: int, folds: int, seed: int = 0) -> npt.NDArray[np.intp]:
    """The fold of each query in cross-validation: a seeded permutation dealt round-robin."""
    order = np.random.default_rng(seed).permutation(n_queries)
    fold_of = np.empty(n_queries, dtype=np.intp)
    fold_of[order] = np.arange(n_queries) % folds
    return fold_of


def cross_validate(variants: Sequence[Variant], prep: Prepared, policies: Sequence[Policy],
                   embedder: EmbedderSpec, folds: int = 5, seed: int = 0,
                   progress: bool = True) -> Validation:
    """Validation AUDC of the r2 and point routers per variant and fold, on the train split.

    Folds are by query. Heads are fitted on every query of the other folds (each arm on the
    rows where it was observed); a fold is judged on its queries that have every arm.
    """
    from tqdm.auto import tqdm

    data = prep.data
    fold_of = query_folds(data.n_queries, folds, seed)
    masks = policy_masks(data)
    out = Validation({v.name: [] for v in variants},
                     {v.name: {p: [] for p in masks} for v in variants}, [])
    tokens = data.token_targets()
    complete = data.complete
    bar = tqdm(total=folds * len(variants), desc="validating variants", disable=not progress)
    for k in range(folds):
        fit_rows = fold_of != k
        val_rows = (fold_of == k) & complete
        if not val_rows.any() or not fit_rows.any():  # tiny data: nothing to score or to fit
            bar.update(len(variants))
            continue
        val = data.subset(val_rows)
        arms = arms_of(val)
        out.queries.append(int(val_rows.sum()))
        for variant in variants:
            heads = fit_variant(variant, prep.embeddings[fit_rows], data.score[fit_rows],
                                tokens[fit_rows], prep.input_tokens[fit_rows])
            ckpt = make_checkpoint(heads, data, policies, embedder,
                                   input_scales=prep.input_scales)
            q, c = predict_arms(ckpt, val, prep.embeddings[val_rows], prep.input_tokens[val_rows])
            out.r2[variant.name].append(r2_audc(q, c, arms))
            for label, mask in masks.items():
                out.point[variant.name][label].append(r2_audc(q, c, arms, mask))
            bar.update(1)
    bar.close()
    return out


def _summary(folds: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(folds)), "std": float(np.std(folds)), "folds": len(folds)}


@dataclass
class Choice:
    """The chosen variant, the validation table of every candidate and the point router's
    validation AUDC per policy under the chosen variant (empty without validation)."""

    variant: Variant
    table: dict[str, dict[str, float]]
    point: dict[str, dict[str, float]]

    @property
    def point_policy(self) -> str | None:
        if not self.point:
            return None
        return max(self.point, key=lambda p: self.point[p]["mean"])


def choose_variant(name: str, prep: Prepared, policies: Sequence[Policy], embedder: EmbedderSpec,
                   folds: int, log: Log, progress: bool = True) -> Choice:
    """The named variant, or for `auto` the best mean validation AUDC among `AUTO_VARIANTS`."""
    if name != "auto" and name not in VARIANTS:
        raise DataError(f"unknown variant {name!r}", field="variant",
                        fix=f"pass auto or one of {', '.join(sorted(VARIANTS))}")
    if name != "auto" and folds < 2:
        return Choice(VARIANTS[name], {}, {})
    names = AUTO_VARIANTS if name == "auto" else (name,)
    score = prep.data.score
    candidates = [VARIANTS[n] for n in names if applicable(VARIANTS[n], prep.data.policies, score)]
    val = cross_validate(candidates, prep, policies, embedder, max(folds, 2), progress=progress)
    if not val.queries:
        raise DataError(f"too few train queries with every arm to cross-validate "
                        f"({int(prep.data.complete.sum())}); the sparsest arms: "
                        f"{sparsest_arms(prep.data)}", field="folds",
                        fix="leave sparse arms out (--models/--policies, a higher "
                            "--min-arm-rows) or skip validation with --variant NAME --folds 0")
    table = {k: _summary(v) for k, v in val.r2.items()}
    best = max(candidates, key=lambda v: (table[v.name]["mean"], -names.index(v.name)))
    log(f"validation on {sum(val.queries)} train queries with every arm "
        f"({len(val.queries)} folds):")
    for k, row in table.items():
        log(f"  validation AUDC {k:<16} {row['mean']:.4f} +- {row['std']:.4f}")
    point = {p: _summary(v) for p, v in val.point[best.name].items()}
    return Choice(best, table, point)


def train(paths: Sequence[str | Path], out: str | Path, embedder_cfg: Mapping[str, Any],
          policies_file: str | Path | None = None, variant: str = "auto", folds: int = 5,
          cache_dir: str | Path | None = None, name: str | None = None,
          interpolate: Sequence[int] = (), progress: bool = True, log: Log = print,
          models: Sequence[str] | None = None, policies: Sequence[str] | None = None,
          min_arm_rows: int = DEFAULT_MIN_ARM_ROWS, strict: bool = False,
          embedder: Embedder | None = None) -> Checkpoint:
    """Fit on the train split of `paths` and write a checkpoint to `out`.

    The prompts are embedded by `make_embedder(embedder_cfg)`, or by `embedder` when given
    (the caller's, left open; `embedder_cfg` is then only recorded in the provenance).

    The whole data is read and checked, and its coverage printed, before anything is embedded.
    `models` / `policies` restrict it to a subset; arms with fewer than `min_arm_rows` train
    rows are left out with a warning (refused when `strict`). `interpolate` adds numeric
    budgets between the trained ones (see `interpolate.py`).
    """
    pfile: PolicyFile | None = load_policy_file(policies_file) if policies_file else None
    everything = load_outcomes(paths, models, policies)
    log(coverage_table(everything))
    train_rows = everything.split_mask("train")
    if not train_rows.any():
        raise DataError("no train rows", file=", ".join(everything.sources), field="split",
                        fix="mark about 70% of the queries 'train' (r2 eval uses 'test')")
    everything = drop_sparse_arms(everything, min_arm_rows, strict, log)
    data = everything.subset(train_rows)
    log(f"train split: {data.n_queries} queries x {len(data.models)} models x "
        f"{len(data.policies)} policies ({int(data.present.sum())} arms); "
        f"{int((~data.complete).sum())} queries lack some arms "
        f"({everything.unscored_rows} rows without a score)")
    own = embedder is None
    emb = make_embedder(embedder_cfg) if embedder is None else embedder
    try:
        train_prep = prepare(data, emb, cache_dir, progress)
    finally:
        if own:
            emb.close()
    fit, pfile = fit_policies(data, train_prep, pfile,
                              ", ".join(str(meta_path(Path(p))) for p in paths))
    specs = fit.policies
    token_fit = compare_input_tokens(specs, data, train_prep.input_tokens, INPUT_TOKENS,
                                     fit.scales)
    spec = EmbedderSpec(emb.id, emb.dim, emb.normalized)
    choice = choose_variant(variant, train_prep, specs, spec, folds, log, progress)
    log(f"variant: {choice.variant.name}")
    if choice.point_policy is not None and len(choice.point) > 1:
        log("point router by policy (validation AUDC): " + ", ".join(
            f"{p} {row['mean']:.4f}" for p, row in choice.point.items())
            + f"; best: {choice.point_policy}")
    heads = fit_variant(choice.variant, train_prep.embeddings, data.score, data.token_targets(),
                        train_prep.input_tokens)
    if interpolate:
        template = pfile.budget_instruction if pfile else DEFAULT_BUDGET_INSTRUCTION
        heads, specs = interpolate_budgets(heads, specs, interpolate, template)
    provenance = {
        "data": [Path(p).name for p in paths], "split": "train", "queries": data.n_queries,
        "variant": choice.variant.name, "validation_audc": choice.table,
        "point_validation_audc": choice.point, "point_policy": choice.point_policy,
        "min_arm_rows": min_arm_rows, "embedder_config": dict(embedder_cfg),
        "prices": {m: data.price_source[m] for m in data.models}, **heads.info,
        "policies_file": Path(pfile.path).name if pfile and pfile.path else None,
        "input_tokens_fit": token_fit.to_json(),
    }
    ckpt = make_checkpoint(heads, data, specs, spec, name or Path(out).name, provenance,
                           fit.scales)
    ckpt.tradeoff = calibrate(Scorer(ckpt), train_prep.embeddings, train_prep.input_tokens,
                              source=f"{', '.join(Path(p).name for p in paths)} (train split)")
    save_checkpoint(ckpt, out)
    missing = missing_instructions(specs)
    if missing:
        log(f"warning: named policies without an instruction: {', '.join(missing)}; the gateway "
            "will refuse to serve this checkpoint (pass --policy-file FILE)")
    return ckpt
