"""Exploration with propensities: a small share of requests goes to another feasible arm.

With probability `rate` a request is served by one of the *other* feasible candidates (those
left after the request's constraints: allowed models, caps, max cost), drawn from a softmax
over their utilities: `p_i ~ exp((u_i - u_best) / (T * (u_best - u_worst)))`, `T` the
temperature in units of the request's utility range (utilities are on very different scales
from one checkpoint and lambda to another; the range makes `T` mean the same everywhere).

Every decision carries the probability that the served arm was chosen (`propensity`): `1 - rate`
for the arg-max, `rate * p_i` for an explored arm, 1 when there is nothing else to choose or
exploration is off. Refits weight outcomes by `1 / propensity` (inverse propensity).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

from router_core import Candidate, Decision
from router_core.scoring import Scorer

from .record import top_candidates
from .settings import ExploreSettings


@dataclass(frozen=True)
class LoggedDecision(Decision):
    """A decision with what the decision log needs: the routing embedding, whether it was
    explored, the propensity of the served arm and the arm the router would have picked."""

    embedding: Any = None
    explored: bool = False
    propensity: float = 1.0
    greedy: Candidate | None = None


class Explorer:
    def __init__(self, settings: ExploreSettings, scorer: Scorer) -> None:
        self.rate = settings.rate
        self.temperature = settings.temperature
        self.scorer = scorer
        self._rng = random.Random(settings.seed)

    def weights(self, others: list[Candidate], best: float, worst: float) -> list[float]:
        spread = (best - worst) * self.temperature
        if not spread > 0 or not math.isfinite(spread):
            return [1.0] * len(others)
        return [math.exp((c.utility - best) / spread) for c in others]

    def __call__(self, decision: Decision, embedding: Any) -> LoggedDecision:
        chosen = decision.chosen
        if self.rate <= 0:
            return _logged(decision, embedding, chosen)
        explore = self._rng.random() < self.rate
        if not explore:  # the common case: only whether another arm exists is needed
            alone = len(top_candidates(decision.candidates, 2)) < 2
            return _logged(decision, embedding, chosen,
                           propensity=1.0 if alone else 1.0 - self.rate)
        cands = list(decision.candidates)
        others = [c for c in cands if (c.model, c.budget) != (chosen.model, chosen.budget)]
        if not others:
            return _logged(decision, embedding, chosen)
        weights = self.weights(others, chosen.utility, min(c.utility for c in cands))
        pick = self._rng.choices(range(len(others)), weights)[0]
        arm = others[pick]
        return LoggedDecision(arm, self.scorer.policy_for(arm.budget), decision.lambda_,
                              decision.input_tokens, decision.candidates, embedding=embedding,
                              explored=True,
                              propensity=self.rate * weights[pick] / sum(weights),
                              greedy=chosen)


#: `Decision`'s fields, copied into a `LoggedDecision` on every routed request: listed once.
_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(Decision))


def _logged(decision: Decision, embedding: Any, greedy: Candidate,
            propensity: float = 1.0) -> LoggedDecision:
    fields = {name: getattr(decision, name) for name in _DECISION_FIELDS}
    return LoggedDecision(**fields, embedding=embedding, propensity=propensity, greedy=greedy)


class KeepEmbedding:
    """The decision hook when logging without exploration: only keeps the embedding."""

    def __call__(self, decision: Decision, embedding: Any) -> LoggedDecision:
        return _logged(decision, embedding, decision.chosen)
