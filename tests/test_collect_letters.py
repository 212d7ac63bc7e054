"""Which letter a multiple-choice answer chose: terse, buried in reasoning, or decorated."""

from __future__ import annotations

import pytest

from gateway.collect import extract_choice

CHOICES = {"A": "moist skin", "B": "tube-like body", "C": "skin that breathes",
           "D": "very small mouth"}


@pytest.mark.parametrize("answer, letter", [
    ("B", "B"),
    ("b", "B"),
    ("(C)", "C"),
    ("**D.**", "D"),
    ("B) tube-like body", "B"),
    ("C. skin that breathes, because worms breathe through it", "C"),
])
def test_terse_and_labelled_answers_give_their_letter(answer: str, letter: str) -> None:
    assert extract_choice(answer, CHOICES) == letter


@pytest.mark.parametrize("answer, letter", [
    ("The answer is (C).", "C"),
    ("the answer is c", "C"),
    ("answer: b", "B"),
    ("Final Answer: **B**", "B"),
    ("The correct option is D because A is wrong", "D"),
    ("\\boxed{A}", "A"),
    ("Therefore, B.", "B"),
    ("I'd choose (C) here.", "C"),
])
def test_an_explicit_verdict_names_the_letter(answer: str, letter: str) -> None:
    assert extract_choice(answer, CHOICES) == letter


def test_reasoning_that_ends_in_answer_line_takes_the_final_verdict() -> None:
    answer = ("Let's think step by step. Option A is tempting, and the answer is not B either "
              "since worms have no tube.\nWeighing C against D, D fits.\nAnswer: D")
    assert extract_choice(answer, CHOICES) == "D"


def test_the_last_verdict_wins_over_earlier_ones() -> None:
    answer = "At first the answer is A. On reflection, the answer is C."
    assert extract_choice(answer, CHOICES) == "C"


@pytest.mark.parametrize("answer, letter", [
    ("A and B are wrong, so C", "C"),
    ("Options A and B are wrong. C fits.", "C"),
    ("A metal rod is not relevant here. B", "B"),
    ("A is correct.", "A"),
])
def test_distractor_letters_before_the_conclusion_are_ignored(answer: str, letter: str) -> None:
    assert extract_choice(answer, CHOICES) == letter


def test_an_article_a_is_not_read_as_choice_a() -> None:
    assert extract_choice("A worm needs a moist home. So a fish cannot live there.",
                          {"A": "x1", "B": "x2"}) is None
    assert extract_choice("The answer is a tube-like body", CHOICES) == "B"


def test_an_answer_quoting_one_choice_text_gets_that_choice() -> None:
    assert extract_choice("Worms have a tube-like body.", CHOICES) == "B"


def test_letters_outside_the_choices_are_never_returned() -> None:
    assert extract_choice("The answer is E.", CHOICES) is None
    assert extract_choice("The answer is E.", ["A", "B", "C", "D", "E"]) == "E"


@pytest.mark.parametrize("answer", ["", "   ", None, "I don't know.", "\n\n[INST] <<SYS>>\n"])
def test_empty_or_letterless_answers_give_none(answer: str | None) -> None:
    assert extract_choice(answer, CHOICES) is None


def test_numeric_labels_are_read_from_verdicts_but_not_from_numbers_in_text() -> None:
    numbered = {"1": "an air mass", "2": "an earthquake", "3": "a tide", "4": "an eclipse"}
    assert extract_choice("1", numbered) == "1"
    assert extract_choice("Answer: 3", numbered) == "3"
    assert extract_choice("1. Weather changes fast.\n2. Air masses move.\nThe answer is 1.",
                          numbered) == "1"
    assert extract_choice("It takes 2 days, so about 4 hours each.", numbered) is None
    assert extract_choice("The answer is 1.5 metres.", numbered) is None
