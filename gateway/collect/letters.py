"""Which choice letter a free-text answer picked, for exact-match scoring of multiple choice.

Answers range from a bare `B` to pages of reasoning that mention every option before settling
on one, so the rules go from the most to the least explicit, and each only returns a letter
that is one of the question's choices:

1. the whole answer is a letter, optionally decorated: `B`, `(b)`, `**C.**`, `D)`;
2. the last explicit verdict: `answer is (C)`, `Answer: D`, `correct option: b`,
   `\\boxed{A}`, `so the answer would be C`, `therefore, B`, `I pick D`;
3. the answer opens with a labelled choice: `B) tube-like body`, `C. 10 years`, `**A**: ...`;
4. exactly one choice's full text appears in the answer;
5. the last standalone capital letter, skipping `A` used as an article (`A metal rod ...`,
   but not `A is wrong`), so `A and B are wrong, so C` gives `C`.

Lower-case letters count only where nothing else could be meant (rules 1-3); in running text a
lone `a` is an article. Some ARC questions label their choices `1`-`4`: digits count in rules 1,
2 and 4 only, since elsewhere a digit is a number or a list item (`1. First, ...`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

_DECOR = r"[\s\*_`'\"\(\)\[\]\{\}]*"
_TERSE = re.compile(
    rf"^{_DECOR}(?:option|choice)?{_DECOR}([A-Za-z0-9]){_DECOR}[\.:\)]?{_DECOR}$", re.IGNORECASE)
_VERDICT = re.compile(r"""
      \b(?:answer|option|choice) (?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be))?
        \s* (?:is\s*)? [:=\-]? \s* [*_`(\[{\s]* ([A-Za-z0-9]) (?![A-Za-z0-9]|[.,]\d)
    | \\boxed\{ \s* ([A-Za-z0-9]) \s* \}
    | \b(?:therefore|thus|hence|so) \s* ,? \s* (?:it\s+is\s+|it's\s+)? [*(\[]* ([A-Z])
        (?![A-Za-z0-9])
    | \b(?:pick|choose|select|go\s+with) \s+ (?:option\s+|choice\s+)? [*(\[]* ([A-Z])
        (?![A-Za-z0-9])
    """, re.IGNORECASE | re.VERBOSE)
_OPENING = re.compile(r"^[\s\*_`\(\[]*([A-Za-z])[\*_`]*\s*[\)\]\.:](?:\s|$)")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")
_NEXT_WORD = re.compile(r"\s+([a-z]+)")
#: Words after a capital `A` that make it a choice rather than the article (`A is correct`).
_VERBS_AFTER_LETTER = frozenset({
    "is", "was", "would", "will", "seems", "looks", "appears", "fits", "matches", "and", "or",
    "because", "since", "as", "must", "should", "could", "can", "might", "remains", "only"})
_WORD_AFTER = re.compile(r"[\*_`\)\]\}]*\s+[a-z]")


def extract_choice(text: str | None, choices: Mapping[str, str] | Collection[str]
                   ) -> str | None:
    """The upper-case choice letter the answer `text` picked, or None when it is unclear.

    `choices` is the question's `{letter: text}` mapping (rule 4 needs the texts) or just its
    letters.
    """
    if not text or not text.strip():
        return None
    valid = {letter.upper() for letter in choices}
    body = text.strip()
    for rule in (_TERSE_RULE, _verdict, _OPENING_RULE):
        found = rule(body, valid)
        if found is not None:
            return found
    if isinstance(choices, Mapping):
        found = _by_choice_text(body, choices)
        if found is not None:
            return found
    return _standalone(body, valid)


def _anchored(pattern: re.Pattern[str]) -> Callable[[str, set[str]], str | None]:
    """A rule: the letter `pattern` captures at the start of the answer, if it is a choice."""
    def rule(body: str, valid: set[str]) -> str | None:
        match = pattern.match(body)
        letter = match.group(1).upper() if match else None
        return letter if letter in valid else None
    return rule


def _verdict(body: str, valid: set[str]) -> str | None:
    found = None
    for match in _VERDICT.finditer(body):
        letter = next(g for g in match.groups() if g is not None)
        if letter.upper() not in valid:
            continue
        after = body[match.end():]
        # "the answer is a tube-like body": a lower-case letter followed by words is an article.
        if letter.islower() and _WORD_AFTER.match(after):
            continue
        if letter == "A" and match.group(1) is None and _is_article(after):
            continue
        found = letter.upper()
    return found


def _standalone(body: str, valid: set[str]) -> str | None:
    found = None
    for match in _STANDALONE.finditer(body):
        letter = match.group(1)
        if letter not in valid:
            continue
        if letter == "A" and _is_article(body[match.end():]):
            continue
        found = letter
    return found


def _is_article(after: str) -> bool:
    word = _NEXT_WORD.match(after)
    return word is not None and word.group(1) not in _VERBS_AFTER_LETTER


def _by_choice_text(text: str, choices: Mapping[str, str]) -> str | None:
    lowered = text.lower()
    hits = {k.upper() for k, v in choices.items()
            if len(v.strip()) >= 2 and v.strip().lower() in lowered}
    return hits.pop() if len(hits) == 1 else None


_TERSE_RULE = _anchored(_TERSE)
_OPENING_RULE = _anchored(_OPENING)
