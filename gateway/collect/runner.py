"""The collection engine: ask every pending (question, model, policy) arm and write its row.

Each arm's request is built exactly as the gateway serves a routed request: the question as the
user message, then `apply_policy` with the policy's own instruction, placement and cap rule
(the protocol `r2 train` stores in the checkpoint) and the deployment's `max_tokens` and cap
field, then `Upstream.complete` (LiteLLM). So what is measured is what is served.

Scheduling: one queue per deployment drained by `concurrency` workers (arms in question order,
so an interrupted run leaves whole questions), and a separate limit for judge calls so that a
deployment that is also the judge cannot deadlock. A failed call is retried with exponential
backoff and jitter when the failure is transient (timeouts, connection errors, 408/409/429/5xx);
401/403/404 stop that deployment; anything else fails the arm. Failed arms write no row, so the
next run retries them. The cost cap is enforced by reservation (see `costs`).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from router_core import Policy
from router_core.text import user_messages

from ..config import Deployment, GatewaySettings
from ..rewrite import apply_policy
from .costs import CostCapReached, CostMeter, Price, worst_case_tokens
from .judge import parse_judge_score, render_judge_prompt
from .letters import extract_choice
from .questions import Question
from .store import OutcomeStore

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
FATAL_STATUS = frozenset({401, 403, 404})


class Completer(Protocol):
    """What the collector needs from `gateway.upstream.Upstream`."""

    async def complete(self, body: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Arm:
    question: Question
    deployment: Deployment
    policy: Policy


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Sample:
    answer: Answer
    score: float
    extracted: str | None = None


@dataclass(frozen=True)
class RunOptions:
    samples: int = 1
    concurrency: int = 4
    judge_concurrency: int = 4
    retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_cost_usd: float | None = None
    temperature: float | None = None
    progress: bool = True


@dataclass
class RunReport:
    planned: int = 0
    written: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    stopped_deployments: dict[str, str] = field(default_factory=dict)
    cost_cap_hit: bool = False
    spent_usd: float = 0.0
    judge_usd: float = 0.0

    @property
    def missing(self) -> int:
        return self.planned - self.written

    @property
    def complete(self) -> bool:
        return self.missing == 0


class ArmFailed(Exception):
    """This arm got no usable answer; its row is not written (a rerun retries it)."""


class DeploymentFailed(ArmFailed):
    """The deployment refuses us (auth, unknown model): stop asking it."""


class Collector:
    def __init__(self, upstream: Completer, settings: GatewaySettings, store: OutcomeStore,
                 prices: dict[str, Price], options: RunOptions) -> None:
        self.upstream = upstream
        self.settings = settings
        self.store = store
        self.prices = prices
        self.options = options
        self.meter = CostMeter(options.max_cost_usd)
        self.report = RunReport()
        self._judge_slots = asyncio.Semaphore(options.judge_concurrency)
        self._bar: Any = None

    async def run(self, arms: list[Arm]) -> RunReport:
        """Ask every arm (skipping none: the caller removed those already done)."""
        self.report.planned = len(arms)
        queues: dict[str, deque[Arm]] = {}
        for arm in arms:
            queues.setdefault(arm.deployment.name, deque()).append(arm)
        self._bar = _progress(len(arms), self.options.progress)
        try:
            workers = [self._worker(name, queue)
                       for name, queue in queues.items()
                       for _ in range(min(self.options.concurrency, len(queue)))]
            await asyncio.gather(*workers)
        finally:
            self._bar.close()
        self.report.cost_cap_hit = self.meter.cap_hit
        self.report.spent_usd = self.meter.spent_usd
        self.report.judge_usd = self.meter.judge_usd
        return self.report

    async def _worker(self, name: str, queue: deque[Arm]) -> None:
        while queue and not self.meter.cap_hit and name not in self.report.stopped_deployments:
            arm = queue.popleft()
            try:
                samples = [await self._sample(arm) for _ in range(self.options.samples)]
            except CostCapReached:
                return
            except DeploymentFailed as exc:
                self.report.stopped_deployments.setdefault(name, str(exc))
                self.report.failures[str(exc)] += 1
            except ArmFailed as exc:
                self.report.failures[str(exc)] += 1
            else:
                self.store.append(build_row(arm, samples, self.prices[name]))
                self.report.written += 1
            self._bar.update(1)
            self._bar.set_postfix_str(self._cost_text(), refresh=False)

    def _cost_text(self) -> str:
        cap = self.meter.cap_usd
        return f"${self.meter.spent_usd:.4f}" + (f" of ${cap:g}" if cap is not None else "")

    def request_body(self, arm: Arm) -> dict[str, Any]:
        """The upstream body for this arm: the gateway's own rewrite of a one-message chat."""
        body: dict[str, Any] = {"model": arm.deployment.name,
                                "messages": user_messages(arm.question.prompt)}
        if self.options.temperature is not None:
            body["temperature"] = self.options.temperature
        return apply_policy(body, arm.deployment.name, arm.policy, arm.deployment.max_tokens,
                            arm.deployment.cap_field)

    async def _sample(self, arm: Arm) -> Sample:
        answer = await self._call(self.request_body(arm), self.prices[arm.deployment.name])
        question = arm.question
        if question.is_multiple_choice:
            assert question.choices is not None
            letter = extract_choice(answer.text, question.choices)
            return Sample(answer, float(letter == question.answer), letter)
        return Sample(answer, await self._judge(question, answer.text))

    async def _judge(self, question: Question, text: str) -> float:
        judge = self.settings.judge
        if judge is None:
            raise ArmFailed("no judge configured for an open-ended question")
        body = {"model": judge.deployment, "temperature": 0, "max_tokens": judge.max_tokens,
                "messages": [{"role": "user", "content": render_judge_prompt(
                    question.prompt, text, question.reference, judge.prompt)}]}
        async with self._judge_slots:
            reply = await self._call(body, self.prices[judge.deployment], judge=True)
        score = parse_judge_score(reply.text)
        if score is None:
            raise ArmFailed(f"judge {judge.deployment}: reply had no 0-1 score")
        return score

    async def _call(self, body: dict[str, Any], price: Price, judge: bool = False) -> Answer:
        name = body["model"]
        tokens_in, tokens_out = worst_case_tokens(body)
        for attempt in range(self.options.retries + 1):
            held = self.meter.reserve(price.cost(tokens_in, tokens_out))
            try:
                response = await self.upstream.complete(body)
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
                self.meter.settle(held, 0.0)
                status = getattr(exc, "status_code", None)
                reason = f"{name}: {type(exc).__name__}" + (f" (status {status})"
                                                            if status else "")
                if status in FATAL_STATUS:
                    raise DeploymentFailed(reason) from None
                if not _retryable(exc, status) or attempt == self.options.retries:
                    raise ArmFailed(reason) from None
                await asyncio.sleep(self._backoff(attempt))
                continue
            try:
                answer = read_answer(response, name)
            except ArmFailed:
                self.meter.settle(held, held, judge=judge)  # billed, amount unknown: assume all
                raise
            self.meter.settle(held, price.cost(answer.input_tokens, answer.output_tokens),
                              judge=judge)
            return answer
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        delay = min(self.options.max_backoff_s, self.options.backoff_s * 2.0 ** attempt)
        return float(delay * (0.5 + random.random() / 2))


def _retryable(exc: Exception, status: Any) -> bool:
    if isinstance(status, int):
        return status in RETRYABLE_STATUS or status >= 500
    # No status: a timeout or a connection that failed before any HTTP answer.
    return isinstance(exc, TimeoutError | OSError) or \
        "Timeout" in type(exc).__name__ or "Connection" in type(exc).__name__


def read_answer(response: Any, name: str) -> Answer:
    """Text, finish reason and usage of a chat completion (LiteLLM object or plain dict)."""
    data = response.model_dump() if hasattr(response, "model_dump") else response
    try:
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        prompt_tokens, completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    except (KeyError, IndexError, TypeError):
        raise ArmFailed(f"{name}: the response has no choices or no usage") from None
    text = (choice.get("message") or {}).get("content") or ""
    return Answer(str(text), choice.get("finish_reason"), int(prompt_tokens),
                  int(completion_tokens or 0))


def build_row(arm: Arm, samples: list[Sample], price: Price) -> dict[str, Any]:
    """The outcome row: means over samples, first sample's text, per-sample details if > 1."""
    n = len(samples)
    q = arm.question
    input_tokens = sum(s.answer.input_tokens for s in samples) / n
    output_tokens = sum(s.answer.output_tokens for s in samples) / n
    first = samples[0]
    row: dict[str, Any] = {
        "query_id": q.query_id, "prompt": q.prompt, "model": arm.deployment.name,
        "policy": arm.policy.label, "score": sum(s.score for s in samples) / n,
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cost_usd": price.cost(input_tokens, output_tokens),
        "source": q.source, "category": q.category, "split": q.split,
        "answer": first.answer.text, "finish_reason": first.answer.finish_reason,
        "samples": n,
    }
    if q.is_multiple_choice:
        row["gold"] = q.answer
        row["extracted"] = first.extracted
    if n > 1:
        row["sample_results"] = [
            {"answer": s.answer.text, "finish_reason": s.answer.finish_reason,
             "score": s.score, "output_tokens": s.answer.output_tokens,
             **({"extracted": s.extracted} if q.is_multiple_choice else {})}
            for s in samples]
    return row


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", desc="collect", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)
