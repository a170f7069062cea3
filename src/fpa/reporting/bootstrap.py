"""A hierarchical bootstrap: data seeds, then training seeds, then evaluation problems.

A method's score varies at three levels: the data seed (a new warm start, reference and trajectory
set), the training seed (data order, sampling) and the evaluation problems (which finite set of
problems was scored). A CI over only one of them overstates what is known. The data are *cells*:

    {data_seed: {training_seed: per-problem values (1-D array)}}

The point estimate weighs every level equally: the mean over data seeds of the mean over training
seeds of the mean over problems. One bootstrap replicate resamples data seeds with replacement, then,
inside each drawn data seed, its training seeds with replacement, then, inside each drawn run, its
problems with replacement (every draw independent, also when a cell is drawn twice), and takes the
same mean of means. The interval is the percentile interval of the replicates.

A paired difference is the same bootstrap on per-problem differences (method − base on the same
problem in the same data seed and training seed): the problem-to-problem spread and the
seed-to-seed spread common to both cancel.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Cells = Mapping[object, Mapping[object, "np.ndarray | list[float]"]]


def _arrays(cells: Cells) -> list[list[np.ndarray]]:
    out = []
    for ds, runs in cells.items():
        row = [np.asarray(v, dtype=float).ravel() for v in runs.values()]
        if not row or any(len(v) == 0 for v in row):
            raise ValueError(f"hierarchical bootstrap: data seed {ds!r} has no runs or a run with no problems")
        out.append(row)
    if not out:
        raise ValueError("hierarchical bootstrap: no cells")
    return out


def point_estimate(cells: Cells) -> float:
    """Mean over data seeds of the mean over training seeds of the mean over problems."""
    return float(np.mean([np.mean([v.mean() for v in row]) for row in _arrays(cells)]))


def replicates(cells: Cells, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of :func:`point_estimate` (data seeds, then training seeds, then problems)."""
    data = _arrays(cells)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    n_ds = len(data)
    for b in range(n_boot):
        total = 0.0
        for d in rng.integers(0, n_ds, size=n_ds):
            runs = data[d]
            run_total = 0.0
            for t in rng.integers(0, len(runs), size=len(runs)):
                v = runs[t]
                run_total += v[rng.integers(0, len(v), size=len(v))].mean() if len(v) > 1 else v[0]
            total += run_total / len(runs)
        out[b] = total / n_ds
    return out


def interval(cells: Cells, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Point estimate, percentile CI, bootstrap standard error, whether the CI excludes 0, and the counts."""
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    boot = replicates(cells, n_boot, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    data = _arrays(cells)
    return {"mean": point_estimate(cells), "ci_low": float(low), "ci_high": float(high), "level": level,
            "se": float(boot.std(ddof=1)), "excludes_zero": bool(low > 0 or high < 0),
            "n_data_seeds": len(data), "n_runs": sum(len(r) for r in data),
            "n_problems": int(np.mean([len(v) for r in data for v in r]))}


def paired_cells(method: Mapping, base: Mapping) -> dict:
    """Per-problem differences method − base in the (data seed, training seed) runs both have.

    Each side maps ``data_seed -> training_seed -> {problem_id: value}``; the problems of a paired run
    must be the same on both sides (one clear error otherwise). Runs only one side has are left out.
    """
    out: dict = {}
    for ds, runs in method.items():
        for ts, scores in runs.items():
            other = base.get(ds, {}).get(ts)
            if other is None:
                continue
            if set(scores) != set(other):
                only = sorted(set(scores) ^ set(other))
                raise ValueError(f"paired difference: data seed {ds}, training seed {ts}: the two evaluations "
                                 f"cover different problems ({len(only)} in only one, e.g. {only[:3]})")
            ids = sorted(scores)
            out.setdefault(ds, {})[ts] = np.array([scores[i] - other[i] for i in ids], dtype=float)
    return out
