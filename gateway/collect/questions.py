"""Question files for `r2 collect`: what to ask, how to score it, and its fixed split.

One JSON object a line, in either of two shapes:

- multiple choice, as in `shared/data/questions/`: `question`, `choices` (`{label: text}` with
  one-character labels, `A`... or `1`..., or a list, lettered A, B, ...), `answer` (the label;
  without it the judge scores the answer), optional `context`, `topic`, `source`, `source_id`;
- open-ended: `prompt` (or `question` without `choices`), optional `reference` (or `answer`),
  `id`, `source`, `category`.

A multiple-choice prompt is written exactly as in the shared `mcqa_*` outcome data
(`Topic: ...\\nQuestion: ...\\nChoices:\\n  A: ...`) and gets the same `query_id`
(`mcqa/<source>/<source_id>`), so collected rows can be trained together with those datasets.
Other questions are identified by an explicit `query_id`, else by a hash of the prompt, which
stays stable when the file is reordered. The train/test split hashes the query id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_core.training.errors import DataError
from router_core.training.readers import read_jsonl

TEST_SHARE = 0.3


@dataclass(frozen=True)
class Question:
    """One query to collect outcomes for."""

    query_id: str
    prompt: str
    source: str
    category: str
    choices: dict[str, str] | None = None
    answer: str | None = None
    reference: str | None = None

    @property
    def is_multiple_choice(self) -> bool:
        """Scored by exact match of the extracted letter (no judge needed)."""
        return self.choices is not None and self.answer is not None

    @property
    def split(self) -> str:
        return split_of(self.query_id)


def split_of(query_id: str, test_share: float = TEST_SHARE) -> str:
    """A fixed `train` / `test` assignment from a hash of the query id (about 70/30)."""
    digest = hashlib.sha256(query_id.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if bucket < test_share else "train"


def mcq_prompt(question: str, choices: dict[str, str], topic: str = "", context: str = "") -> str:
    """The prompt format of the shared `mcqa_*` datasets."""
    lines = [f"Topic: {topic}"] if topic else []
    if context:
        lines.append(f"Context: {context}")
    lines.append(f"Question: {question}")
    lines.append("Choices:")
    lines.extend(f"  {letter}: {text}" for letter, text in choices.items())
    return "\n".join(lines)


def load_questions(paths: Sequence[str | Path], limit: int | None = None) -> list[Question]:
    """All questions of `paths` (at most `limit` from each file); duplicate ids are errors."""
    out: list[Question] = []
    seen: dict[str, str] = {}
    for raw_path in paths:
        path = Path(raw_path)
        for number, question in _read(path, limit):
            where = f"{path}:{number}"
            if question.query_id in seen:
                raise DataError(f"duplicate query_id, same as {seen[question.query_id]}",
                                file=str(path), row=number, field="query_id")
            seen[question.query_id] = where
            out.append(question)
    if not out:
        raise DataError("no questions", file=", ".join(str(p) for p in paths))
    return out


def _read(path: Path, limit: int | None) -> list[tuple[int, Question]]:
    out: list[tuple[int, Question]] = []
    for number, raw in read_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        out.append((number, parse_question(raw, path.name.split(".")[0], str(path), number)))
    return out


def parse_question(raw: dict[str, Any], stem: str, file: str = "", row: int = 0) -> Question:
    """One question from its JSON object; `stem` names the file when the row has no source."""
    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise DataError("must be a string", file=file, row=row, field=key)
        return value

    choices = _choices(raw.get("choices"), file, row)
    source = text("source") or stem
    if choices is not None:
        question = text("question")
        if question is None:
            raise DataError("missing field", file=file, row=row, field="question")
        answer = text("answer")
        if answer is not None:
            answer = answer.strip().upper()
            if answer not in choices:
                raise DataError(f"answer {answer!r} is not one of the choices", file=file,
                                row=row, field="answer")
        topic = text("topic") or ""
        prompt = mcq_prompt(question, choices, topic, text("context") or "")
        source_id = text("source_id")
        default_id = f"mcqa/{source}/{source_id}" if source_id else _hash_id(prompt)
        return Question(text("query_id") or default_id, prompt, source,
                        topic or text("category") or source, choices, answer,
                        text("solution") or None)
    open_prompt = text("prompt") or text("question")
    if open_prompt is None or not open_prompt.strip():
        raise DataError("missing field: give `prompt` (or `question` with `choices`)",
                        file=file, row=row, field="prompt")
    reference = text("reference") or text("answer")
    return Question(text("query_id") or _hash_id(open_prompt), open_prompt, source,
                    text("category") or text("topic") or source, None, None, reference)


def _choices(value: Any, file: str, row: int) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = {chr(ord("A") + i): v for i, v in enumerate(value)}
    if not isinstance(value, dict) or not value:
        raise DataError("must be a non-empty object {letter: text} or a list", file=file,
                        row=row, field="choices")
    out: dict[str, str] = {}
    for key, text in value.items():
        letter = str(key).strip().upper()
        if len(letter) != 1 or not letter.isalnum() or not isinstance(text, str | int | float):
            raise DataError("choices need one-character keys and text values", file=file,
                            row=row, field="choices")
        out[letter] = str(text)
    return out


def _hash_id(prompt: str) -> str:
    return "q/" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
