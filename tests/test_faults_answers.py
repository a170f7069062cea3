"""Number words are not units: scale words are parsed into the number, only known units are dropped,
and a number followed by other words ("3 or more") does not match a bare number."""

from __future__ import annotations

import pytest

from fpa.tasks.answers import normalize_number
from fpa.tasks.equivalence import answers_match, plain_number


@pytest.mark.parametrize("pred, gold, correct", [
    ("10 million", "10", False),
    ("10 million", "10000000", True),
    ("3 million", "3000000", True),
    ("2 dozen", "2", False),
    ("2 dozen", "24", True),
    ("3 or more", "3", False),
    ("3", "3 or more", False),
    ("1.5 billion", "1500000000", True),
    ("2 trillion", "2000000000000", True),
    ("5 hundred", "500", True),
    ("3 thousand", "3000", True),
    ("$2 million", "2000000", True),
    ("1,000 thousand", "1000000", True),
    ("2 hundred thousand", "200000", True),
    ("10 million dollars", "10000000", True),
    ("3/4 million", "750000", True),
    ("5 cm", "5", True),
    ("18 dollars.", "18", True),
    ("5\\text{ cm}", "5", True),
    ("12 hours", "12", True),
    ("7 inches", "7", True),
    ("4 square feet", "4", True),
    ("10 or 11", "10", False),
    ("3 apples and 2 pears", "3", False),
    ("5 \\text{ or more}", "5", False),
])
def test_number_words_and_units(pred, gold, correct):
    r = answers_match(pred, gold)
    assert (r.correct, r.status, r.method) == (correct, "ok", "fast"), (pred, gold, r)


@pytest.mark.parametrize("raw, expected", [
    ("10 million", "10000000"), ("2 dozen", "24"), ("2.5 thousand", "2500"), ("1/2 dozen", "6"),
    ("3 or more", "3 or more"), ("5 cm", "5"), ("18 dollars.", "18"), ("3 x", "3 x"), ("5 Million", "5000000"),
])
def test_normalize_number_words(raw, expected):
    assert normalize_number(raw) == expected


def test_wordy_answers_are_not_plain_numbers():
    assert plain_number("3 or more") is None
    assert plain_number("10 million") == 10_000_000
