from fpa.tasks.arith import ArithTask, split_of, verify_arith, worked_solution


def test_problems_deterministic_and_splits_disjoint():
    task = ArithTask(n_terms=4, max_operand=99)
    train = task.problems("train", 300, seed=0)
    assert [p.question for p in train] == [p.question for p in task.problems("train", 300, seed=0)]
    test = task.problems("test", 100, seed=0)
    dev = task.problems("dev", 50, seed=0)
    qs = [{p.question for p in s} for s in (train, dev, test)]
    assert not (qs[0] & qs[1]) and not (qs[0] & qs[2]) and not (qs[1] & qs[2])
    assert all(split_of(p.question) == "test" for p in test)
    assert len(qs[0]) == 300  # no duplicates within a split


def test_difficulty_knobs_shape_problems():
    p = ArithTask(n_terms=6, max_operand=9, ops="+").problems("train", 20)[0]
    assert len(p.metadata["terms"]) == 6 and all(1 <= t <= 9 for t in p.metadata["terms"])
    assert len(p.solution.splitlines()) == 6  # 5 steps + final line
    assert "-" not in p.question


def test_worked_solution_format():
    sol, ans = worked_solution([17, 25, 8, 40], ["+", "-", "+"])
    assert sol == "17+25=42\n42-8=34\n34+40=74\n#### 74" and ans == 74


def test_gold_solution_verifies_on_outcome_and_process():
    task = ArithTask()
    for p in task.problems("train", 50):
        v = task.verify(p, p.solution)
        assert v.reward == 1.0 and v.outcome and v.process and v.extracted == p.answer


def _problem(terms, ops):
    task = ArithTask(n_terms=len(terms))
    p = task.problems("train", 1)[0]
    sol, ans = worked_solution(terms, ops)
    p.metadata, p.answer, p.solution = {"terms": terms, "ops": ops}, str(ans), sol
    return p


def test_right_answer_through_wrong_step_is_outcome_not_process():
    p = _problem([17, 25, 8, 40], ["+", "-", "+"])
    # 17+25 is 42, written 43; then 43-8 is 35, written 34: two compensating mistakes.
    completion = "17+25=43\n43-8=34\n34+40=74\n#### 74"
    v = verify_arith(p, completion, "outcome")
    assert v.outcome and not v.process and v.reward == 1.0
    assert verify_arith(p, completion, "process").reward == 0.0


def test_wrong_answer_and_malformed_completions():
    p = _problem([17, 25, 8, 40], ["+", "-", "+"])
    cases = {
        "17+25=42\n42-8=34\n34+40=75\n#### 75": False,  # last step wrong
        "17+25=42\n42-8=34\n34+40=74": False,  # no final line
        "": False,
        "#### seventy-four": False,
        "#### 74.0": False,  # not the fixed format
        "garbage\n#### 74": True,  # outcome right, process wrong
        "17+25=42\n42-8=34\n34+40=74\n#### 74\n": True,  # trailing newline is fine
        "#### -74": False,
    }
    for completion, outcome in cases.items():
        v = verify_arith(p, completion, "outcome")
        assert v.outcome is outcome, completion
        assert v.process is (completion.strip() == p.solution), completion


def test_negative_intermediates_parse():
    p = _problem([5, 30, 2], ["-", "+"])
    assert p.solution == "5-30=-25\n-25+2=-23\n#### -23"
    v = verify_arith(p, p.solution, "process")
    assert v.process and v.reward == 1.0


def test_bad_knobs_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="reward"):
        ArithTask(reward="partial")
    with pytest.raises(ValueError, match="ops"):
        ArithTask(ops="+/")


def test_boxed_style_same_problems_boxed_solutions_verified_by_math_verify():
    plain, boxed = ArithTask(n_terms=2, max_operand=50, ops="+"), ArithTask(n_terms=2, max_operand=50, ops="+",
                                                                           style="boxed")
    a, b = plain.problems("test", 30), boxed.problems("test", 30)
    assert [p.question for p in a] == [p.question for p in b] and [p.answer for p in a] == [p.answer for p in b]
    p = b[0]
    t1, t2 = p.metadata["terms"]
    assert p.solution == f"{t1} + {t2} = {t1 + t2}\n\\boxed{{{t1 + t2}}}"
    assert boxed.verify(p, p.solution).outcome
    assert boxed.verify(p, f"The sum is \\boxed{{{t1 + t2}}}.").reward == 1.0
    wrong = boxed.verify(p, f"\\boxed{{{t1 + t2 + 1}}}")
    assert wrong.reward == 0.0 and wrong.extracted == str(t1 + t2 + 1)
    assert boxed.verify(p, f"{t1} + {t2} = {t1 + t2}").reward == 0.0  # no boxed answer: not extracted
    assert plain.verify(a[0], p.solution).reward == 0.0  # the scratchpad verifier wants "#### n"


def test_boxed_style_refuses_process_reward_and_unknown_styles():
    import pytest

    with pytest.raises(ValueError, match="style"):
        ArithTask(style="words")
    with pytest.raises(ValueError, match="process"):
        ArithTask(style="boxed", reward="process")
