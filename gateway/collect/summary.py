"""The end-of-run table: per (model, policy) quality, length, cost and budget compliance.

Budget compliance is the share of answers whose output tokens (from the provider's usage) are
within 1.1x the token budget, as R2-Router's appendix measures it; it applies to numeric budgets
only. Because the gateway also sends `max_tokens = budget`, an answer cannot overrun by much, so
the table also shows the share cut off by that cap (`finish_reason == "length"`): a model that
ignores the instruction shows up there, with truncated answers and lower scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

COMPLIANCE_SLACK = 1.1


@dataclass(frozen=True)
class ArmSummary:
    model: str
    policy: str | int
    rows: int
    mean_score: float
    mean_output_tokens: float
    cost_usd: float
    compliance: float | None
    truncated: float

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "policy": self.policy, "rows": self.rows,
                "mean_score": self.mean_score, "mean_output_tokens": self.mean_output_tokens,
                "cost_usd": self.cost_usd, "budget_compliance": self.compliance,
                "truncated": self.truncated}


def _answers(row: dict[str, Any]) -> list[tuple[float, str | None]]:
    """(output tokens, finish reason) of every answer behind a row."""
    samples = row.get("sample_results")
    if isinstance(samples, list) and samples:
        return [(float(s.get("output_tokens", 0)), s.get("finish_reason")) for s in samples]
    return [(float(row.get("output_tokens", 0)), row.get("finish_reason"))]


def summarize(rows: Iterable[dict[str, Any]], models: Sequence[str],
              policies: Sequence[str | int]) -> list[ArmSummary]:
    """One line per (model, policy) that has rows, in the order given."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["model"]), str(row["policy"])), []).append(row)
    out = []
    for model in models:
        for policy in policies:
            group = groups.get((model, str(policy)))
            if not group:
                continue
            answers = [a for row in group for a in _answers(row)]
            budget = policy if isinstance(policy, int) else None
            within = (sum(tokens <= COMPLIANCE_SLACK * budget for tokens, _ in answers)
                      / len(answers) if budget is not None else None)
            out.append(ArmSummary(
                model=model, policy=policy, rows=len(group),
                mean_score=sum(float(r["score"]) for r in group) / len(group),
                mean_output_tokens=sum(float(r["output_tokens"]) for r in group) / len(group),
                cost_usd=sum(float(r.get("cost_usd") or 0.0) for r in group),
                compliance=within,
                truncated=sum(reason == "length" for _, reason in answers) / len(answers)))
    return out


def format_summary(lines: Sequence[ArmSummary]) -> str:
    """A plain-text table; `-` where compliance does not apply (no numeric budget)."""
    if not lines:
        return "no rows collected yet"
    width = max(12, *(len(s.model) for s in lines))
    pwidth = max(9, *(len(str(s.policy)) for s in lines))
    head = (f"{'model':<{width}} {'policy':>{pwidth}} {'rows':>5} {'score':>6} {'out_tok':>8} "
            f"{'cost_usd':>11} {'within_1.1x':>11} {'truncated':>9}")
    body = []
    for s in lines:
        comp = f"{s.compliance:.0%}" if s.compliance is not None else "-"
        body.append(f"{s.model:<{width}} {s.policy!s:>{pwidth}} {s.rows:>5} {s.mean_score:>6.3f} "
                    f"{s.mean_output_tokens:>8.1f} {s.cost_usd:>11.6f} {comp:>11} "
                    f"{s.truncated:>9.0%}")
    total = sum(s.cost_usd for s in lines)
    return "\n".join([head, *body, f"total answer cost of these rows: ${total:.6f}"])
