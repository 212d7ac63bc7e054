"""MLP heads (the paper's default: hidden 256-128-64, ReLU, sigmoid quality), trained with torch.

All `K = M*P` heads of a target are trained at once as one batched network (weights
`[K, in, out]`, a `bmm` per layer), which is also the checkpoint's layout (`{t}_w{i}`,
`{t}_b{i}`). Quality heads output a logit trained with soft-label binary cross-entropy on the
score (the checkpoint's `quality_link: sigmoid`); token heads regress log1p(tokens)
(`tokens_space: log1p`). A random 15% of the train rows is held out for early stopping; the
weights of the best held-out epoch are kept. Missing arms are masked out of the loss. torch is
imported only here and only when an MLP variant is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (256, 128, 64)
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 20
    holdout: float = 0.15
    seed: int = 0


def fit_mlp_bank(x: F64, y: F64, loss: str, config: MLPConfig = MLPConfig()) -> dict[str, F32]:
    """Train K heads on `x` `[N, D]`, `y` `[N, K]` (NaN = missing); returns `w{i}`, `b{i}`.

    `loss` is `"bce"` (targets in [0, 1], logit outputs) or `"mse"`.
    """
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    n, k = y.shape
    sizes = [x.shape[1], *config.hidden, 1]
    weights, biases = [], []
    for i in range(len(sizes) - 1):
        bound = 1.0 / np.sqrt(sizes[i])  # PyTorch's nn.Linear initialisation
        weights.append(((torch.rand(k, sizes[i], sizes[i + 1], generator=gen) * 2 - 1) * bound)
                       .requires_grad_())
        biases.append(((torch.rand(k, sizes[i + 1], generator=gen) * 2 - 1) * bound)
                      .requires_grad_())
    params = [*weights, *biases]
    xt = torch.as_tensor(x, dtype=torch.float32)
    mask = torch.as_tensor(~np.isnan(y), dtype=torch.float32)
    yt = torch.as_tensor(np.nan_to_num(y), dtype=torch.float32)
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(n * config.holdout))) if n >= 10 else 0
    val, train = perm[:n_val], perm[n_val:]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def forward(rows: torch.Tensor) -> torch.Tensor:
        h = xt[rows].unsqueeze(0).expand(k, -1, -1)
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.bmm(h, w) + b[:, None, :]
            if i < len(weights) - 1:
                h = torch.relu(h)
        return h[:, :, 0].T  # [rows, K]

    def objective(rows: torch.Tensor) -> torch.Tensor:
        out, target, m = forward(rows), yt[rows], mask[rows]
        if loss == "bce":
            per = torch.nn.functional.binary_cross_entropy_with_logits(out, target,
                                                                       reduction="none")
        else:
            per = (out - target) ** 2
        return (per * m).sum() / m.sum().clamp(min=1.0)

    best = (float("inf"), [p.detach().clone() for p in params])
    stale = 0
    for _ in range(config.epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for start in range(0, len(order), config.batch_size):
            opt.zero_grad()
            objective(order[start: start + config.batch_size]).backward()  # type: ignore[no-untyped-call,unused-ignore]
            opt.step()
        if n_val == 0:
            best = (0.0, [p.detach().clone() for p in params])
            continue
        with torch.no_grad():
            score = float(objective(val))
        if score < best[0] - 1e-6:
            best, stale = (score, [p.detach().clone() for p in params]), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    state = best[1]
    layers = len(weights)
    out: dict[str, F32] = {}
    for i in range(layers):
        out[f"w{i}"] = state[i].numpy().astype(np.float32)
        out[f"b{i}"] = state[layers + i].numpy().astype(np.float32)
    return out
