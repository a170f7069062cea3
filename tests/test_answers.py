"""Answer extraction (fpa.tasks.answers) and answer equivalence under a time limit (fpa.tasks.equivalence)."""

from __future__ import annotations

import operator
import os
import threading
import time
from fractions import Fraction

import pytest

from fpa.tasks.answers import extract_boxed, extract_final_answer, normalize_number
from fpa.tasks.equivalence import (
    STATS,
    AnswerVerifier,
    MatchResult,
    VerificationStats,
    answers_match,
    default_verifier,
    plain_number,
)


# Module-level so the worker process can unpickle them by name.
def _hang(predicted: str, gold: str) -> bool:
    time.sleep(60)
    return True


def _die(predicted: str, gold: str) -> bool:
    os._exit(3)


# ---------------------------------------------------------------- extraction

@pytest.mark.parametrize("text, expected", [
    (r"so the answer is \boxed{42}.", "42"),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt{2}}{2}"),
    (r"first \boxed{1}, then \boxed{2}", "2"),  # last box wins
    (r"\boxed{\boxed{5}}", "5"),  # the innermost starts last
    (r"\fbox{7}", "7"),
    (r"$\boxed 5$", "5"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are content
    (r"\boxed{ 3 }", "3"),
    (r"\boxed{ }", None),  # boxed nothing: no answer
    (r"\boxed{3} and a truncated \boxed{4", "3"),  # unclosed box skipped
    (r"\boxedx{3}", None),  # another macro
    ("no box here", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Step 1...\nStep 2...\n#### 1,000\n", "1,000"),
    ("#### 3\nwait\n#### 4", "4"),  # last #### line
    ("40+2=42\n#### 42", "42"),
    ("The answer is 42.", "42"),
    ("So the final answer is $3.5$. Done.", "3.5"),
    ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
    ("**Answer:** 12", "12"),
    ("the answer is \\(7\\)", "7"),
    ("The answer is 3.5", "3.5"),
    ("#### 5\nthe answer is \\boxed{6}", "6"),  # a box beats the other formats
    ("the answer is 5\n#### 6", "6"),  # #### beats the phrase
    ("I don't know.", None),
    ("the answer is", None),
    ("", None),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("raw, expected", [
    ("1,000", "1000"), ("1,234,567.5", "1234567.5"), ("1{,}000", "1000"), ("1,2", "1,2"),
    ("$5$", "5"), ("\\$5", "5"), ("$1,000.50", "1000.50"), ("-$3", "-3"),
    ("42.", "42"), ("3.5.", "3.5"), ("50%", "50"), ("50\\%", "50"),
    ("5 cm", "5"), ("5\\text{ cm}", "5"), ("18 dollars.", "18"), ("3 x", "3 x"),
    ("\\frac{1}{2}", "\\frac{1}{2}"), ("  7 ", "7"),
])
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("12", Fraction(12)), ("-0.5", Fraction(-1, 2)), (".25", Fraction(1, 4)), ("3/4", Fraction(3, 4)),
    ("1,000", Fraction(1000)), ("3/0", None), ("1e5", None), ("\\frac12", None), ("x", None),
])
def test_plain_number(raw, expected):
    assert plain_number(raw) == expected


# ---------------------------------------------------------------- equivalence

@pytest.mark.parametrize("pred, gold, correct, method", [
    ("0.5", "1/2", True, "fast"),
    ("3.0", "3", True, "fast"),
    ("1,000", "1000", True, "fast"),
    ("5 cm", "5", True, "fast"),
    ("5\\text{ cm}", "5", True, "fast"),
    ("50\\%", "50", True, "fast"),
    ("0.333", "1/3", False, "fast"),  # the fast path is exact
    ("4", "5", False, "fast"),
    ("\\dfrac{1}{2}", "\\frac12", True, "math_verify"),
    ("\\frac{1}{2}", "0.5", True, "math_verify"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True, "math_verify"),
    ("2\\sqrt{3}", "\\sqrt{12}", True, "math_verify"),
    ("\\pi", "\\frac{\\pi}{2}", False, "math_verify"),
    ("x", "y", False, "math_verify"),
    (None, "5", False, "none"),
    ("", "5", False, "none"),
])
def test_answers_match(pred, gold, correct, method):
    r = answers_match(pred, gold)
    assert (r.correct, r.status, r.method) == (correct, "ok", method)


def test_extract_then_match_nested_box():
    pred = extract_final_answer(r"Rationalising, we get $\boxed{\frac{\sqrt{2}}{2}}$.")
    assert answers_match(pred, r"\frac{1}{\sqrt{2}}").correct


def test_empty_box_is_no_answer():
    r = answers_match(extract_final_answer(r"\boxed{ }"), "5")
    assert (r.correct, r.status, r.method) == (False, "ok", "none")


def test_unparseable_gold_is_an_error():
    r = answers_match("5", r"\boxed{}")
    assert (r.correct, r.status) == (False, "error")


def test_stats_count_every_check():
    stats = VerificationStats()
    before = STATS.as_dict()["n_checked"]
    for r in (MatchResult(True), MatchResult(False, "timeout"), MatchResult(False, "error")):
        stats.record(r)
    assert stats.as_dict() == {"n_checked": 3, "n_timeout": 1, "n_error": 1}
    answers_match("1", "1", stats=stats)
    assert stats.n_checked == 4 and STATS.as_dict()["n_checked"] == before + 1
    stats.reset()
    assert stats.as_dict() == {"n_checked": 0, "n_timeout": 0, "n_error": 0}


def test_works_off_the_main_thread():
    # math-verify's own SIGALRM timeout raises outside the main thread; the worker must not mind.
    results = []
    t = threading.Thread(target=lambda: results.append(answers_match("\\frac{2}{4}", "\\frac12")))
    t.start()
    t.join()
    assert [(r.correct, r.status) for r in results] == [(True, "ok")]


def test_concurrent_callers_share_the_pool():
    with AnswerVerifier(max_workers=2, check_fn=operator.eq, warm_up=None) as v:
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(v.check(str(i % 2), "0", 5.0)))
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(r[1] for r in results) == [False] * 3 + [True] * 3
    assert all(r[0] == "ok" for r in results)


def test_timeout_scores_zero_is_counted_and_recovers():
    stats = VerificationStats()
    with AnswerVerifier(max_workers=1, check_fn=_hang, warm_up=None) as hanging:
        hanging.prestart()  # start-up is not part of the check's time limit; keep it out of `elapsed`
        stuck = hanging._all[0].proc
        t0 = time.perf_counter()
        r = answers_match("\\frac{1}{2}", "x", timeout_s=0.3, stats=stats, verifier=hanging)
        elapsed = time.perf_counter() - t0
        assert stuck.poll() is not None  # the stuck child was killed...
        assert hanging._all[0].proc.poll() is None  # ...and a fresh one is already starting
    assert (r.correct, r.status) == (False, "timeout")
    assert elapsed < 2.0
    assert stats.as_dict() == {"n_checked": 1, "n_timeout": 1, "n_error": 0}


def test_worker_restarts_after_timeout():
    with AnswerVerifier(max_workers=1, check_fn=operator.eq, warm_up=None) as v:
        assert v.check("a", "a", 5.0) == ("ok", True, "")
        first = v._all[0].proc.pid
        v._all[0].restart()  # what a timeout does
        assert v.check("a", "b", 5.0) == ("ok", False, "")
        assert v._all[0].proc.pid != first


def test_errors_and_crashes_score_zero_and_are_counted():
    stats = VerificationStats()
    with AnswerVerifier(max_workers=1, check_fn=operator.truediv, warm_up=None) as raising:
        r = answers_match("a", "b", stats=stats, verifier=raising)  # str / str raises TypeError
    assert (r.correct, r.status, r.detail) == (False, "error", "TypeError")
    with AnswerVerifier(max_workers=1, check_fn=_die, warm_up=None) as dying:
        r = answers_match("a", "b", stats=stats, verifier=dying)
    assert (r.correct, r.status) == (False, "error")
    assert stats.as_dict() == {"n_checked": 2, "n_timeout": 0, "n_error": 2}


def test_bad_arguments():
    with pytest.raises(ValueError):
        answers_match("1", "1", timeout_s=0)
    with pytest.raises(ValueError):
        AnswerVerifier(max_workers=0)
    with pytest.raises(Exception):
        AnswerVerifier(check_fn=lambda p, g: True)  # cannot be sent to the worker
