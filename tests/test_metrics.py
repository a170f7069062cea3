"""pass@k, maj@k and BenchmarkAccuracy (fpa.evaluation.metrics) against brute-force computations."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from fpa.evaluation.metrics import BenchmarkAccuracy, maj_at_k, majority_index, pass_at_k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n, c, k", [
    (1, 0, 1), (1, 1, 1), (5, 0, 3), (5, 5, 3), (5, 2, 1), (5, 2, 3), (5, 2, 4), (6, 1, 6),
    (8, 3, 2), (10, 4, 5), (12, 1, 3), (12, 11, 1), (16, 5, 8),
])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_closed_forms_and_large_n():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # Large n, where C(n, k) overflows a float: still the exact ratio, computed with integers here.
    n, c, k = 2000, 7, 100
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("n, c, k, err", [
    (5, 2, 6, ValueError), (5, 6, 1, ValueError), (0, 0, 1, ValueError), (5, -1, 1, ValueError),
    (5, 2, 0, ValueError), (5.0, 2, 1, TypeError), (5, 2, True, TypeError),
])
def test_pass_at_k_validation(n, c, k, err):
    with pytest.raises(err):
        pass_at_k(n, c, k)


def test_maj_at_k():
    answers = ["3", "5", "5", None, "3", "3"]
    correct = [False, True, True, False, False, False]
    assert maj_at_k(answers, correct, 1) == 0.0  # "3"
    assert maj_at_k(answers, correct, 3) == 1.0  # "5" twice
    assert maj_at_k(answers, correct, 5) == 0.0  # "3" and "5" tie at 2; "3" came first
    assert maj_at_k(answers, correct, 6) == 0.0
    assert maj_at_k([None, None], [False, False], 2) == 0.0  # nobody voted
    assert maj_at_k([None, "7", None], [False, True, False], 3) == 1.0  # None does not vote
    assert majority_index(["a", "b", "b", "a"], 4) == 0  # tie -> first occurrence
    assert majority_index(["1,000", "7", "1000"], 3, key=lambda a: a.replace(",", "")) == 0
    with pytest.raises(ValueError):
        maj_at_k(["1"], [True], 2)
    with pytest.raises(ValueError):
        maj_at_k(["1", "2"], [True], 1)


def _random_benchmark(seed: int, n_problems: int, n: int):
    rng = random.Random(seed)
    answers, correct = [], []
    for _ in range(n_problems):
        gold = str(rng.randint(0, 3))
        row = [rng.choice([None, "0", "1", "2", "3"]) for _ in range(n)]
        answers.append(row)
        correct.append([a == gold for a in row])
    return answers, correct


def _plain(answers, correct, ks, maj_ks):
    out = {f"pass@{k}": sum(brute_pass_at_k(len(r), sum(r), k) for r in correct) / len(correct) for k in ks}
    for k in maj_ks:
        votes = []
        for a, r in zip(answers, correct):
            counts = {}
            for x in a[:k]:
                if x is not None:
                    counts[x] = counts.get(x, 0) + 1
            if not counts:
                votes.append(0.0)
                continue
            top = max(counts.values())
            winner = next(x for x in a[:k] if x is not None and counts[x] == top)
            votes.append(float(r[a.index(winner)]))
        out[f"maj@{k}"] = sum(votes) / len(votes)
    return out


def test_benchmark_accuracy_matches_plain_python():
    answers, correct = _random_benchmark(0, n_problems=40, n=8)
    metric = BenchmarkAccuracy(ks=(1, 2, 4, 8), maj_ks=(1, 4, 8))
    for i in range(0, 40, 7):  # uneven batches
        metric.update(correct[i:i + 7], answers[i:i + 7])
    got = metric.compute()
    expected = _plain(answers, correct, (1, 2, 4, 8), (1, 4, 8))
    for name, value in expected.items():
        assert got[name].item() == pytest.approx(value, abs=1e-12), name
    assert got["pass@1"].item() == pytest.approx(sum(map(sum, correct)) / (40 * 8))
    assert got["n_problems"].item() == 40 and got["n_samples"].item() == 320


def test_benchmark_accuracy_merges_like_one_process():
    answers, correct = _random_benchmark(1, n_problems=30, n=6)
    whole = BenchmarkAccuracy(ks=(1, 3), maj_ks=(5,))
    whole.update(correct, answers)
    rank0, rank1, rank1_copy = (BenchmarkAccuracy(ks=(1, 3), maj_ks=(5,)) for _ in range(3))
    rank0.update(correct[:11], answers[:11])
    rank1.update(correct[11:], answers[11:])
    rank1_copy.update(correct[11:], answers[11:])
    rank0.merge_state(rank1)
    expected = whole.compute()
    merged = rank0.compute()
    assert merged.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(merged[name], expected[name], rtol=0, atol=1e-12), name
    # What a sum all-reduce does to the states, done by hand.
    fresh = BenchmarkAccuracy(ks=(1, 3), maj_ks=(5,))
    fresh.update(correct[:11], answers[:11])
    summed = {name: getattr(fresh, name) + getattr(rank1_copy, name) for name in fresh._defaults}
    for name, value in summed.items():
        setattr(fresh, name, value)
    for name in expected:
        assert torch.allclose(fresh.compute()[name], expected[name], rtol=0, atol=1e-12), name


def test_benchmark_accuracy_validation_and_empty():
    metric = BenchmarkAccuracy(ks=(4,))
    assert set(metric.compute()) == {"pass@1", "pass@4", "n_problems", "n_samples"}  # pass@1 always
    assert torch.isnan(metric.compute()["pass@1"])  # no problems yet
    with pytest.raises(ValueError):
        metric.update([[True, False]])  # 2 samples cannot give pass@4
    with pytest.raises(ValueError):
        BenchmarkAccuracy(maj_ks=(2,)).update([[True, False]])  # maj@k needs answers
    with pytest.raises(ValueError):
        BenchmarkAccuracy(ks=(0,))
