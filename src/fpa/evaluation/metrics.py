"""Sampling metrics for verifiable tasks: pass@k, maj@k, and a torchmetrics accumulator for both.

pass@k is the unbiased estimator of Chen et al. (2021): draw n >= k samples per problem, count c
correct, and estimate the chance that k samples drawn without replacement contain a correct one.
maj@k asks whether the most common final answer among the first k samples is a correct one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torchmetrics import Metric


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k): the chance a random k-subset of the n samples holds a correct one.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the binomials, so it stays
    exact enough and fast for n in the thousands where C(n, k) overflows a float.
    """
    _check_int("n", n, 1)
    _check_int("c", c, 0)
    _check_int("k", k, 1)
    if c > n:
        raise ValueError(f"c (correct samples) must be <= n (samples), got c={c}, n={n}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least k={k} samples per problem, got n={n}")
    if n - c < k:  # every k-subset must include a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority_index(answers: Sequence[Hashable | None], k: int,
                   key: Callable[[Hashable], Hashable] | None = None) -> int | None:
    """Index (among the first k) of the first sample carrying the most common answer; None if none voted.

    None answers (nothing extracted) do not vote. Ties go to the answer seen first, so the result
    does not depend on dict or Counter ordering details. ``key`` maps answers to voting classes
    (e.g. a normaliser, so "1,000" and "1000" vote together).
    """
    _check_int("k", k, 1)
    if k > len(answers):
        raise ValueError(f"maj@{k} needs at least k={k} samples, got {len(answers)}")
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, int] = {}
    for i, answer in enumerate(answers[:k]):
        if answer is None:
            continue
        cls = key(answer) if key is not None else answer
        counts[cls] = counts.get(cls, 0) + 1
        first.setdefault(cls, i)
    if not counts:
        return None
    best = max(counts, key=lambda cls: (counts[cls], -first[cls]))
    return first[best]


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool], k: int,
             key: Callable[[Hashable], Hashable] | None = None) -> float:
    """1.0 if the majority answer among the first k samples is correct, else 0.0 (see majority_index).

    The majority answer's correctness is read from the first sample that gave it; samples with
    the same answer have the same verdict, so which one does not matter.
    """
    if len(answers) != len(correct):
        raise ValueError(f"answers and correct differ in length: {len(answers)} vs {len(correct)}")
    idx = majority_index(answers, k, key)
    return float(idx is not None and bool(correct[idx]))


class BenchmarkAccuracy(Metric):
    """Accumulates per-problem sample verdicts; computes pass@1, pass@k and maj@k over a benchmark.

    ``update`` takes, per problem, the list of sample verdicts (and optionally the extracted
    answers, needed for maj@k). States are sums over problems with ``dist_reduce_fx="sum"``, so
    ranks that evaluate disjoint problems reduce to exactly the single-process result, and
    ``merge_state`` combines instances the same way. pass@1 is the mean fraction of correct samples,
    which is what the unbiased estimator gives for k=1.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, ks: Sequence[int] = (1,), maj_ks: Sequence[int] = (), **kwargs):
        super().__init__(**kwargs)
        for k in (*ks, *maj_ks):
            _check_int("k", k, 1)
        self.ks = tuple(sorted(set(ks) | {1}))
        self.maj_ks = tuple(sorted(set(maj_ks)))
        # float64: sums of many per-problem fractions; counts stay exact well past 2**31.
        self.add_state("n_problems", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_samples", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pass_sum", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("maj_sum", torch.zeros(len(self.maj_ks), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, correct: Sequence[Sequence[bool]],
               answers: Sequence[Sequence[Hashable | None]] | None = None) -> None:
        """``correct[i][j]``: whether sample j of problem i is right; ``answers[i][j]`` its final answer."""
        if self.maj_ks and answers is None:
            raise ValueError(f"maj@k for k in {self.maj_ks} needs the extracted answers")
        if answers is not None and len(answers) != len(correct):
            raise ValueError(f"answers cover {len(answers)} problems but correct covers {len(correct)}")
        pass_rows, maj_rows, n_samples = [], [], 0
        for i, verdicts in enumerate(correct):
            n, c = len(verdicts), sum(bool(v) for v in verdicts)
            pass_rows.append([pass_at_k(n, c, k) for k in self.ks])
            if self.maj_ks:
                maj_rows.append([maj_at_k(answers[i], verdicts, k) for k in self.maj_ks])
            n_samples += n
        if not pass_rows:
            return
        self.n_problems += len(pass_rows)
        self.n_samples += n_samples
        self.pass_sum += torch.tensor(pass_rows, dtype=torch.float64).sum(0)
        if self.maj_ks:
            self.maj_sum += torch.tensor(maj_rows, dtype=torch.float64).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"pass@1": ..., "pass@k": ..., "maj@k": ..., "n_problems", "n_samples"}``; NaN rates if empty."""
        denom = self.n_problems
        out = {f"pass@{k}": self.pass_sum[i] / denom for i, k in enumerate(self.ks)}
        out.update({f"maj@{k}": self.maj_sum[i] / denom for i, k in enumerate(self.maj_ks)})
        out["n_problems"] = self.n_problems.clone()
        out["n_samples"] = self.n_samples.clone()
        return out


class SampleShare(Metric):
    """The share of samples with a property (e.g. every step right), over the samples that have a verdict.

    ``update`` takes a flat sequence of booleans or None (no verdict: not counted). Sum states, so
    ranks reduce to the single-process share; ``compute`` is NaN when no sample had a verdict.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("hits", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Sequence[bool | None]) -> None:
        known = [bool(v) for v in values if v is not None]
        self.hits += sum(known)
        self.total += len(known)

    def compute(self) -> torch.Tensor:
        return self.hits / self.total if self.total > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class MeanStandardError(Metric):
    """The standard error of a mean over items (here: per-problem pass@1 over a benchmark's problems).

    sd(values, ddof=1) / √n from sum states (count, sum, sum of squares, float64), so ranks that score
    disjoint problems reduce to the single-process value; NaN with fewer than 2 items. It is the
    sampling error of the score over problems and the samples drawn for them: with k samples per
    problem, the spread of per-problem means includes the sampling noise of the k samples.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("n", "total", "total_sq"):
            self.add_state(name, torch.tensor(0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Sequence[float]) -> None:
        v = torch.as_tensor(list(values), dtype=torch.float64)
        self.n += v.numel()
        self.total += v.sum()
        self.total_sq += (v * v).sum()

    def compute(self) -> torch.Tensor:
        if self.n < 2:
            return torch.tensor(float("nan"), dtype=torch.float64)
        mean = self.total / self.n
        var = ((self.total_sq - self.n * mean * mean) / (self.n - 1)).clamp_min(0)
        return (var / self.n).sqrt()
