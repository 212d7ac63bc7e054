"""Training and evaluating checkpoints on outcome data: the library behind `r2 train` / `r2 eval`.

`train` loads the data, embeds every prompt once (through the cache), chooses a head variant
by k-fold cross-validation on the train split (validation AUDC of the r2 router; test queries
are never looked at), fits it on the whole train split and writes a checkpoint with prices,
policies and the validation table in its provenance. `evaluate` scores a checkpoint on the
test split with every router of `evaluate.py`.
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
from .dataset import OutcomeData, load_outcomes
from .embed_cache import EmbeddingCache, default_cache_dir, embed_texts
from .errors import DataError
from .evaluate import Arms, EvalReport, evaluate_predictions, r2_audc
from .input_tokens import (
    compare_input_tokens,
    conversation_tokens,
    fit_input_overhead,
    with_extra_input,
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


def make_checkpoint(heads: FittedHeads, data: OutcomeData, policies: Sequence[Policy],
                    embedder: EmbedderSpec, name: str = "r2-checkpoint",
                    provenance: Mapping[str, Any] | None = None) -> Checkpoint:
    models = tuple(ModelSpec(m, m, data.prices[m].input_per_million,
                             data.prices[m].output_per_million) for m in data.models)
    return Checkpoint(embedder=embedder, models=models, policies=tuple(policies),
                      arrays=dict(heads.arrays), head_kind=heads.kind,
                      head_options=dict(heads.options), input_tokens=INPUT_TOKENS, name=name,
                      provenance=dict(provenance or {}))


def predict_arms(ckpt: Checkpoint, data: OutcomeData, embeddings: F64,
                 input_tokens: F64) -> tuple[F64, F64]:
    """Predicted quality and cost `[N, A]` for the data's arms (model-major, as `arms_of`)."""
    models = {m: i for i, m in enumerate(ckpt.model_names)}
    labels = {p.label: j for j, p in enumerate(ckpt.policies)}
    cells = []
    for m in data.models:
        for p in data.policies:
            if m not in models or p not in labels:
                raise DataError(f"the checkpoint has no head for model {m!r} at policy {p!r}",
                                field="model" if m not in models else "policy")
            cells.append((models[m], labels[p]))
    mi, pj = (np.array(v, dtype=np.intp) for v in zip(*cells, strict=True))
    scores = Scorer(ckpt, policy_input_tokens(ckpt, ckpt.input_tokens)).predict(embeddings,
                                                                                input_tokens)
    return scores.quality[:, mi, pj], scores.cost[:, mi, pj]


def arms_of(data: OutcomeData) -> Arms:
    n = data.n_queries
    return Arms(data.arm_labels(), data.score.reshape(n, -1), data.cost.reshape(n, -1))


def cross_validate(variants: Sequence[Variant], prep: Prepared, policies: Sequence[Policy],
                   embedder: EmbedderSpec, folds: int = 5, seed: int = 0,
                   progress: bool = True) -> dict[str, list[float]]:
    """Validation AUDC of the r2 router per variant and fold, on the train split only."""
    from tqdm.auto import tqdm

    data = prep.data
    order = np.random.default_rng(seed).permutation(data.n_queries)
    fold_of = np.empty(data.n_queries, dtype=np.intp)
    fold_of[order] = np.arange(data.n_queries) % folds
    out: dict[str, list[float]] = {v.name: [] for v in variants}
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
        for variant in variants:
            heads = fit_variant(variant, prep.embeddings[fit_rows], data.score[fit_rows],
                                tokens[fit_rows])
            ckpt = make_checkpoint(heads, data, policies, embedder)
            q, c = predict_arms(ckpt, val, prep.embeddings[val_rows], prep.input_tokens[val_rows])
            out[variant.name].append(r2_audc(q, c, arms_of(val)))
            bar.update(1)
    bar.close()
    return out


def choose_variant(name: str, prep: Prepared, policies: Sequence[Policy], embedder: EmbedderSpec,
                   folds: int, log: Log, progress: bool = True,
                   ) -> tuple[Variant, dict[str, dict[str, float]]]:
    """The named variant, or for `auto` the best mean validation AUDC among `AUTO_VARIANTS`."""
    if name != "auto" and name not in VARIANTS:
        raise DataError(f"unknown variant {name!r}; expected auto or one of {sorted(VARIANTS)}",
                        field="variant")
    if name != "auto" and folds < 2:
        return VARIANTS[name], {}
    names = AUTO_VARIANTS if name == "auto" else (name,)
    score = prep.data.score
    candidates = [VARIANTS[n] for n in names if applicable(VARIANTS[n], prep.data.policies, score)]
    scores = cross_validate(candidates, prep, policies, embedder, max(folds, 2),
                            progress=progress)
    if not any(scores.values()):
        raise DataError("too few complete train queries to cross-validate; pass --variant NAME "
                        "--folds 0", field="folds")
    table = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "folds": len(v)}
             for k, v in scores.items()}
    best = max(candidates, key=lambda v: (table[v.name]["mean"], -names.index(v.name)))
    for k, row in table.items():
        log(f"  validation AUDC {k:<16} {row['mean']:.4f} +- {row['std']:.4f}")
    return best, table


def train(paths: Sequence[str | Path], out: str | Path, embedder_cfg: Mapping[str, Any],
          policies_file: str | Path | None = None, variant: str = "auto", folds: int = 5,
          cache_dir: str | Path | None = None, name: str | None = None,
          interpolate: Sequence[int] = (), progress: bool = True, log: Log = print) -> Checkpoint:
    """Fit on the train split of `paths` and write a checkpoint to `out`.

    `interpolate` adds numeric budgets between the trained ones (see `interpolate.py`).
    """
    pfile: PolicyFile | None = load_policy_file(policies_file) if policies_file else None
    everything = load_outcomes(paths)
    train_rows = everything.split_mask("train")
    if not train_rows.any():
        raise DataError("no train rows", file=", ".join(everything.sources), field="split")
    data = everything.subset(train_rows)
    log(f"train split: {data.n_queries} queries x {len(data.models)} models x "
        f"{len(data.policies)} policies; {int((~data.complete).sum())} queries lack some arms "
        f"({everything.unscored_rows} rows without a score)")
    embedder = make_embedder(embedder_cfg)
    try:
        train_prep = prepare(data, embedder, cache_dir, progress)
    finally:
        embedder.close()
    pfile = with_collected(pfile, data.collected_policies,
                           file=", ".join(str(meta_path(Path(p))) for p in paths))
    policies = fit_input_overhead(build_policies(data.policies, pfile), data,
                                  train_prep.input_tokens, INPUT_TOKENS)
    token_fit = compare_input_tokens(policies, data, train_prep.input_tokens, INPUT_TOKENS)
    spec = EmbedderSpec(embedder.id, embedder.dim, embedder.normalized)
    chosen, table = choose_variant(variant, train_prep, policies, spec, folds, log, progress)
    log(f"variant: {chosen.name}")
    heads = fit_variant(chosen, train_prep.embeddings, data.score, data.token_targets())
    if interpolate:
        template = pfile.budget_instruction if pfile else DEFAULT_BUDGET_INSTRUCTION
        heads, policies = interpolate_budgets(heads, policies, interpolate, template)
    provenance = {
        "data": [Path(p).name for p in paths], "split": "train", "queries": data.n_queries,
        "variant": chosen.name, "validation_audc": table, "embedder_config": dict(embedder_cfg),
        "prices": {m: data.price_source[m] for m in data.models}, **heads.info,
        "policies_file": Path(pfile.path).name if pfile and pfile.path else None,
        "input_tokens_fit": token_fit.to_json(),
    }
    ckpt = make_checkpoint(heads, data, policies, spec, name or Path(out).name, provenance)
    save_checkpoint(ckpt, out)
    missing = missing_instructions(policies)
    if missing:
        log(f"warning: named policies without an instruction: {', '.join(missing)}; the gateway "
            "will refuse to serve this checkpoint (pass --policies FILE)")
    return ckpt


def default_point_policy(data: OutcomeData) -> int | str:
    """The policy a reactive router would fix: best mean train quality over the models."""
    train = data.split_mask("train")
    rows = data.score[train] if train.any() else data.score
    means = np.nanmean(rows, axis=(0, 1))  # every policy has rows: no empty slice
    return data.policies[int(np.nanargmax(means))]


def evaluate(paths: Sequence[str | Path], ckpt: Checkpoint, embedder: Embedder,
             point_policy: str | None = None, cache_dir: str | Path | None = None,
             split: str = "test", progress: bool = True, system_prompt: str | None = None,
             composition: str | None = None, bill_system_prompt: bool = True) -> EvalReport:
    """Every router on the `split` queries that have all arms; the rest are counted."""
    data = load_outcomes(paths)
    point = default_point_policy(data) if point_policy is None else point_policy
    labels = [str(p) for p in data.policies]
    if str(point) not in labels:
        raise DataError(f"--point-policy {point!r} is not a policy of the data "
                        f"({', '.join(labels)})", field="point_policy")
    in_split = data.split_mask(split)
    rows = in_split & data.complete
    if not rows.any():
        raise DataError(f"no {split} queries with every arm", field="split")
    prep = prepare(data.subset(rows), embedder, cache_dir, progress, system_prompt, composition)
    if system_prompt and not bill_system_prompt:
        # Isolate the routing text: costs as if the system prompt were free.
        prep.input_tokens = conversation_tokens(prep.data.prompts, None, INPUT_TOKENS)
    elif system_prompt:
        # The system prompt is billed too: realised costs include its input tokens.
        prep.data = with_extra_input(prep.data, prep.input_tokens - conversation_tokens(
            prep.data.prompts, None, INPUT_TOKENS))
    q, c = predict_arms(ckpt, prep.data, prep.embeddings, prep.input_tokens)
    j = labels.index(str(point))
    point = data.policies[j]
    point_arms = [i * len(data.policies) + j for i in range(len(data.models))]
    report = evaluate_predictions(q, c, arms_of(prep.data), point_arms)
    lam = ckpt.default_lambda
    r2 = report.routers["r2"].curve
    at = int(np.argmin(np.abs(np.asarray(r2.lambdas) - lam)))
    report.info = {
        "split": split, "queries": int(rows.sum()),
        "queries_missing_arms": int((in_split & ~data.complete).sum()),
        "system_prompt_chars": len(system_prompt or ""), "routing_text": composition,
        "system_prompt_billed": bool(system_prompt) and bill_system_prompt,
        "rows_without_score": data.unscored_rows, "point_policy": point,
        "checkpoint": str(ckpt.path) if ckpt.path else ckpt.name,
        "embedder": embedder.id, "variant": ckpt.provenance.get("variant"),
        "default_lambda": {"lambda": lam, "cost": float(r2.cost[at]),
                           "quality": float(r2.quality[at])},
    }
    return report
