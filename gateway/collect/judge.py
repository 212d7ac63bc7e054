"""The LLM judge for open-ended questions: its prompt and the parsing of its 0-1 score.

The judge is a configured deployment (`judge:` in gateway.yaml) asked through the same LiteLLM
path as everything else. Its prompt shows the question, the reference answer when there is one,
and the answer to grade, and asks for one line `Score: <number between 0 and 1>`. Replies are
parsed leniently (the last `Score: 0.8`, `score = 1`, `**Score:** 7/10`, or a reply that starts
with `0.5` or `80%`); anything without a usable number (`Score: 7`, an echo of the template) is
`None`, and the caller treats that arm as failed (retried on the
next run) rather than inventing a score.
"""

from __future__ import annotations

import re

DEFAULT_JUDGE_PROMPT = """You are grading an answer to a question.

Question:
{question}
{reference_block}
Answer to grade:
{answer}

Judge whether the answer is correct and responsive{reference_hint}. An empty, off-topic or \
wrong answer scores 0; a fully correct one scores 1; partial credit in between.
Reply with one line and nothing else:
Score: <number between 0 and 1>"""

_SLOT = re.compile(r"\{(question|answer|reference|reference_block|reference_hint)\}")
_LABELLED = re.compile(
    r"score\W{0,6}?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:(/)\s*(\d+(?:\.\d+)?)|(%))?",
    re.IGNORECASE)
_LEADING = re.compile(r"^[\s*]*(\d+(?:\.\d+)?)\s*(?:(/)\s*(\d+(?:\.\d+)?)|(%))?")


def render_judge_prompt(question: str, answer: str, reference: str | None,
                        template: str | None = None) -> str:
    """The judge's user message; `template` may use {question}, {answer}, {reference}."""
    reference_block = f"\nReference answer:\n{reference}\n" if reference else ""
    hint = " (compare it with the reference answer)" if reference else ""
    values = {"question": question, "answer": answer or "(empty answer)",
              "reference": reference or "(none)", "reference_block": reference_block,
              "reference_hint": hint}
    # One pass over our own slots only: questions and answers may contain braces themselves.
    return _SLOT.sub(lambda m: values[m.group(1)], template or DEFAULT_JUDGE_PROMPT)


def parse_judge_score(reply: str | None) -> float | None:
    """The score in [0, 1] the judge gave, or None when the reply has none."""
    if not reply:
        return None
    labelled = list(_LABELLED.finditer(reply))
    match = labelled[-1] if labelled else _LEADING.match(reply)
    return _value(match) if match else None


def _value(match: re.Match[str]) -> float | None:
    number = float(match.group(1))
    if match.group(2) and match.group(3):
        scale = float(match.group(3))
        if scale <= 0:
            return None
        number /= scale
    elif match.group(4):
        number /= 100.0
    # A bare "7" is ambiguous (out of 10? of 100?): not a 0-1 score.
    return number if 0.0 <= number <= 1.0 else None
