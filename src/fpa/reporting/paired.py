"""Paired comparison of two evaluations of the same problems: a difference in pass@1 with a bootstrap CI.

Each evaluation is read from its ``samples/<benchmark>.jsonl`` (one row per sample: ``problem_id``,
``correct``). Both models answered the same problems, so the difference is taken per problem
(mean correctness of the policy's samples minus the reference's) and the bootstrap resamples
problems, keeping each problem's pair together: the problem-to-problem spread, common to both models,
cancels instead of widening the interval.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def per_problem(samples_file: str | Path) -> dict[str, float]:
    """problem_id -> mean correctness of its samples (pass@1 of that problem)."""
    hits: dict[str, list[float]] = defaultdict(list)
    with open(samples_file, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                hits[str(row["problem_id"])].append(float(bool(row["correct"])))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{samples_file}: line {n}: not a sample row with problem_id and correct "
                                 f"({type(e).__name__}: {e})") from None
    return {pid: sum(v) / len(v) for pid, v in hits.items()}


def paired_difference(policy: dict[str, float], reference: dict[str, float], n_boot: int = 10_000,
                      level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """pass@1 of each, their difference (policy − reference), its bootstrap CI over problems and standard errors.

    The two must cover the same problems (one clear error otherwise). ``se_*`` are the standard errors
    of each score over problems; ``ci_*`` the percentile interval of the resampled mean difference.
    """
    if set(policy) != set(reference):
        only = sorted(set(policy) ^ set(reference))
        raise ValueError(f"paired_difference: the evaluations cover different problems ({len(only)} in only one, "
                         f"e.g. {only[:3]})")
    if not policy:
        raise ValueError("paired_difference: no problems")
    ids = sorted(policy)
    a = np.array([policy[i] for i in ids])
    b = np.array([reference[i] for i in ids])
    d = a - b
    n = len(ids)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])

    def se(x: np.ndarray) -> float:
        return float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    return {"n_problems": n, "policy": float(a.mean()), "reference": float(b.mean()), "difference": float(d.mean()),
            "ci_low": float(low), "ci_high": float(high), "level": level, "se_policy": se(a),
            "se_reference": se(b), "se_difference": se(d), "excludes_zero": bool(low > 0 or high < 0)}


def samples_files(results: dict, run_dir: str | Path) -> tuple[Path | None, Path | None]:
    """(policy, reference) samples files of the headline benchmark of one run's ``results.json``.

    None for an evaluation whose samples are not on disk (runs made before evaluations recorded
    their directory, or a moved cache).
    """
    def samples(summary: dict, default_dir: Path | None) -> Path | None:
        bench = summary.get("benchmark")
        info = (summary.get("suite") or {}).get("benchmarks", {}).get(bench, {})
        base = Path(summary["dir"]) if summary.get("dir") else default_dir
        if base is None or not info.get("samples_file"):
            return None
        path = base / info["samples_file"]
        return path if path.is_file() else None

    return samples(results.get("policy") or {}, Path(run_dir) / "eval"), samples(results.get("reference") or {}, None)


def run_difference(results: dict, run_dir: str | Path, n_boot: int = 10_000) -> dict[str, float] | None:
    """Policy − reference on the headline benchmark of one run's ``results.json``, paired by problem.

    None when either evaluation's samples are not on disk (:func:`samples_files`).
    """
    pol, ref = samples_files(results, run_dir)
    if pol is None or ref is None:
        return None
    return paired_difference(per_problem(pol), per_problem(ref), n_boot=n_boot)


def difference_table(runs) -> str:
    """Markdown: per finished run, pass@1 ± its standard error for both models and the paired difference's CI."""
    lines = []
    for run in runs:
        if run.status != "finished" or not run.results:
            continue
        d = run_difference(run.results, run.path)
        if d is None:
            continue
        lines.append(f"| {run.label} | {getattr(run, 'data_seed', 0)} | {run.seed} | {d['reference']:.3f} ± {d['se_reference']:.3f} | "
                     f"{d['policy']:.3f} ± {d['se_policy']:.3f} | {d['difference']:+.3f} | "
                     f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {'yes' if d['excludes_zero'] else 'no'} | "
                     f"{d['n_problems']} |")
    if not lines:
        return ""
    head = ("| run | data seed | seed | reference pass@1 ± se | policy pass@1 ± se | policy − reference | 95% CI "
            "(paired bootstrap over problems) | excludes 0 | problems |\n|---|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(lines) + "\n"
