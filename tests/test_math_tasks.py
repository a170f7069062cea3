"""Math task sources: MATH / GSM8K training sets from local stand-ins in their real schema,
reasoning-gym families and CHAMP, each verified offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from testconfig import compose_config
from fpa.data.records import RecordError
from fpa.tasks.champ import ChampTask, checkable_answers
from fpa.tasks.math_tasks import MathTask, bare_answer
from fpa.tasks.reasoning_gym_tasks import ReasoningGymTask
from fpa.tasks.sources import SourceUnavailable, gsm8k_final_answer

SOURCES = Path(__file__).parent / "fixtures" / "sources"


def test_gsm8k_train_stand_in_reads_final_answers():
    task = MathTask(source="gsm8k", path=str(SOURCES / "gsm8k_train.jsonl"))
    problems = task.problems("train") + task.problems("dev")
    by_answer = {p.answer: p for p in problems}
    assert set(by_answer) == {"72", "10", "5", "42", "624", "24000", "48", "16"}  # "#### 24,000" -> 24000
    p = by_answer["72"]
    assert p.question.startswith("Natalia sold clips") and p.solution.endswith("#### 72") and p.split == "train"
    assert task.verify(p, "48 + 24 = 72\n#### 72").reward == 1.0
    assert task.verify(p, "So she sold 72 clips. The answer is 72.").reward == 1.0
    assert task.verify(p, "\\boxed{72.0}").reward == 1.0
    wrong = task.verify(p, "\\boxed{71}")
    assert wrong.reward == 0.0 and wrong.extracted == "71" and wrong.process is None
    none = task.verify(p, "I am not sure.")
    assert none.reward == 0.0 and none.extracted is None


def test_gsm8k_final_answer_parsing():
    assert gsm8k_final_answer("a\nb\n#### 1,234") == "1234"
    assert gsm8k_final_answer("no final line") is None


def test_math_train_stand_in_takes_the_last_box_and_skips_unboxed_rows():
    task = MathTask(source="math", path=str(SOURCES / "math_train.jsonl"))
    problems = task.problems("train")
    answers = [p.answer for p in problems]
    assert answers == ["0", "\\frac{\\sqrt{2}}{2}", "\\frac{7}{12}", "\\{-2, 2\\}", "2"]  # nested braces kept
    assert task.n_skipped == {"train": 1}  # the solution that never boxed its answer
    assert problems[1].metadata == {"level": "Level 1", "type": "Geometry"}
    frac = problems[2]
    assert task.verify(frac, "so it is $\\boxed{\\dfrac{7}{12}}$").reward == 1.0
    assert task.verify(frac, "The answer is 7/12.").reward == 1.0
    assert task.verify(frac, "\\boxed{0.5833}").reward == 0.0  # exact, not rounded
    assert task.verify(problems[1], "\\boxed{\\frac{1}{\\sqrt{2}}}").reward == 1.0  # math-verify: symbolic


def _gsm8k_like(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            row = {"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}
            f.write(json.dumps(row) + "\n")
    return path


def test_train_dev_split_is_disjoint_seeded_and_prefix_stable(tmp_path):
    task = MathTask(source="gsm8k", path=str(_gsm8k_like(tmp_path / "g.jsonl", 400)))
    train, dev = task.problems("train"), task.problems("dev")
    assert len(train) + len(dev) == 400 and 5 <= len(dev) <= 40
    assert not {p.question for p in train} & {p.question for p in dev}
    a, b = task.problems("train", 50, seed=3), task.problems("train", 80, seed=3)
    assert [p.id for p in a] == [p.id for p in b[:50]]  # a shorter list is a prefix of a longer one
    assert [p.id for p in a] != [p.id for p in task.problems("train", 50, seed=4)]
    assert len({p.id for p in b}) == 80
    with pytest.raises(ValueError, match="asked for 1000"):
        task.problems("train", 1000)


def test_malformed_record_names_file_record_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "ok?", "answer": "#### 1"}) + "\n" + json.dumps({"answer": "#### 2"})
                    + "\n")
    with pytest.raises(RecordError) as err:
        MathTask(source="gsm8k", path=str(path)).problems("test")
    assert err.value.index == 1 and err.value.field == "question" and str(path) in str(err.value)
    assert "line 2" in str(err.value)


def test_benchmark_sources_have_only_a_test_split():
    task = MathTask(source="aime24", path=str(SOURCES / "aime_2024.parquet"))
    assert [p.answer for p in task.problems("test")] == ["204", "025"]
    with pytest.raises(ValueError, match="no 'train' split"):
        task.problems("train")


def test_unreachable_hub_source_says_how_to_use_a_local_copy(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SourceUnavailable, match=r"openai/gsm8k.*local"):
        MathTask(source="gsm8k").problems("test")


@pytest.mark.parametrize("family, config", [
    ("gsm_symbolic", {}),
    ("chain_sum", {"min_terms": 2, "max_terms": 4, "max_digits": 2}),
    ("basic_arithmetic", {"min_terms": 2, "max_terms": 3, "max_digits": 2}),
])
def test_reasoning_gym_families_are_split_and_verified_offline(family, config):
    task = ReasoningGymTask(family=family, config=config)
    test = task.problems("test", 20, seed=0)
    train = task.problems("train", 40, seed=0)
    assert [p.question for p in test] == [p.question for p in task.problems("test", 20, seed=0)]
    assert not {p.question for p in test} & {p.question for p in train}
    assert len({p.question for p in train}) == 40
    native = ReasoningGymTask(family=family, config=config, verifier="native")
    for p in test[:5]:
        for completion in (f"so \\boxed{{{p.answer}}}", f"work\n#### {p.answer}", p.answer):
            assert task.verify(p, completion).reward == 1.0, (p.question, completion)
        assert native.verify(p, f"The answer is {p.answer}.").reward == 1.0
        wrong = str(int(float(p.answer)) + 1)
        assert task.verify(p, f"\\boxed{{{wrong}}}").reward == 0.0
        assert native.verify(p, wrong).reward == 0.0
    assert test[0].solution.endswith(f"#### {test[0].answer}")


def test_bare_answers_only_for_short_replies():
    assert bare_answer("  42\n") == "42"
    assert bare_answer("Let me think about this at some length before answering.") is None


def test_champ_ships_offline_with_checkable_answers():
    numeric = ChampTask().problems()
    assert len(numeric) == 79 and all(p.answer.lstrip("-").isdigit() for p in numeric)
    p = numeric[0]
    assert ChampTask().verify(p, f"Thus the count is $\\boxed{{{p.answer}}}$.").reward == 1.0
    assert ChampTask().verify(p, "\\boxed{-1}").reward == 0.0
    expr = ChampTask(answers="expression").problems()
    assert len(expr) > len(numeric)
    binom = next(q for q in expr if q.metadata["raw_answer"].startswith("@@C(10, 5)@@"))
    assert binom.answer == "C(10, 5)" and binom.metadata["alternatives"] == ["252"]
    assert ChampTask(answers="expression").verify(binom, "\\boxed{252}").reward == 1.0
    sample = [q.id for q in ChampTask().problems("test", 10, seed=1)]
    assert sample == [q.id for q in ChampTask().problems("test", 10, seed=1)] and len(set(sample)) == 10
    with pytest.raises(ValueError, match="evaluation only"):
        ChampTask().problems("train")


def test_checkable_answers():
    assert checkable_answers("239", "numeric") == ["239"]
    assert checkable_answers("@@2^(n-1)@@", "numeric") is None
    assert checkable_answers("@@2^(n-1)@@", "expression") == ["2^(n-1)"]
    assert checkable_answers("@@(x=1, y=2)@@ and @@(x=2, y=1)@@", "expression") is None
    assert checkable_answers("No", "expression") is None


@pytest.mark.parametrize("name, overrides", [
    ("gsm8k", [f"task.path={SOURCES / 'gsm8k_train.jsonl'}"]),
    ("math", [f"task.path={SOURCES / 'math_train.jsonl'}"]),
    ("gsm_symbolic", []), ("chain_sum", []), ("basic_arithmetic", []),
])
def test_task_configs_compose_and_instantiate(name, overrides):
    cfg = compose_config(f"task={name}", *overrides)
    task = instantiate(cfg.task)
    problems = task.problems("train", 3, seed=0)
    assert len(problems) == 3 and all(p.answer for p in problems)
    assert task.verify(problems[0], f"\\boxed{{{problems[0].answer}}}").reward == 1.0
