"""Pass@1 against the compute spent so far: the in-training evaluation curves placed on ledger FLOPs.

The x value of a curve point at optimizer step ``s`` of a run (``results.json["ledger"]``):

- every one-off stage the run used (warm start, offline generation, precomputed reference log-probs), charged
  in full to every run that uses it, as the ledger's totals are;
- the training stage's FLOPs × ``s / steps``: the ledger records the training total, and every step trains on a
  batch of the same size (token counts vary by a few per cent from step to step);
- every rollout round sampled before step ``s`` (``rounds`` of the ledger's ``rollouts`` stage: exact).

Evaluation stages are left out: every method is evaluated alike, and the in-training evaluations are not in the
ledger. ``training_flops`` is the same sum at the last step: the run's total without its evaluations.
"""

from __future__ import annotations

import pandas as pd

from fpa.reporting.runs import Run
from fpa.reporting.table import pass1_columns

EVAL_STAGES = ("eval_reference", "eval_policy")
PER_STEP = ("train", "rollouts")  # stages spent step by step; the others are one-off


def _stages(run: Run) -> dict:
    return (((run.results or {}).get("ledger") or {}).get("stages")) or {}


def flops_at(run: Run, step: float) -> float | None:
    """FLOPs the run had spent when it had taken ``step`` optimizer steps (evaluations excluded)."""
    stages = _stages(run)
    if not stages or any(s.get("flops") is None for k, s in stages.items() if k not in EVAL_STAGES):
        return None
    steps = int((run.config.get("train") or {}).get("max_steps") or 0)
    fixed = sum(s["flops"] for k, s in stages.items() if k not in EVAL_STAGES + PER_STEP)
    train = stages.get("train", {}).get("flops") or 0
    rounds = stages.get("rollouts", {}).get("rounds") or []
    spent = sum(r["flops"] for r in rounds if r["step"] < step or (step >= steps and r["step"] < steps))
    return fixed + (train * min(step, steps) / steps if steps else train) + spent


def training_flops(run: Run) -> float | None:
    steps = int((run.config.get("train") or {}).get("max_steps") or 0)
    return flops_at(run, steps)


def after_warm_start_flops(run: Run) -> float | None:
    """:func:`training_flops` without the warm start (``sft``), which every method of a data seed shares: what the
    methods themselves spend (offline generation, rollouts, training)."""
    total = training_flops(run)
    return None if total is None else total - (_stages(run).get("sft", {}).get("flops") or 0)


def curve_points(runs: list[Run]) -> pd.DataFrame:
    """One row per (finished run, evaluation step) of the headline benchmark's curve, with its FLOPs so far."""
    rows = []
    for r in runs:
        if r.status != "finished" or r.metrics is None or "step" not in r.metrics:
            continue
        columns = pass1_columns(r.metrics.columns)
        if not columns:
            continue
        col = next(iter(columns.values()))
        curve = r.metrics[["step", col]].dropna().groupby("step")[col].mean()
        for step, value in curve.items():
            flops = flops_at(r, float(step))
            if flops is not None:
                rows.append({"run": str(r.path), "method": r.label, "data_seed": r.data_seed, "seed": r.seed,
                             "step": int(step), "flops": flops, "pass@1": float(value)})
    return pd.DataFrame(rows, columns=["run", "method", "data_seed", "seed", "step", "flops", "pass@1"])


def training_seconds(run: Run) -> float | None:
    """Wall seconds of every stage but the evaluations (cached one-off stages at their original cost)."""
    stages = _stages(run)
    values = [s.get("seconds") for k, s in stages.items() if k not in EVAL_STAGES]
    return None if not values or any(v is None for v in values) else float(sum(values))


def compute_table(points) -> str:
    """Markdown: per method, mean held-out pass@1 and mean compute over its runs (``compute_points`` rows)."""
    if points.empty:
        return ""
    lines = ["| method | runs | held-out pass@1 (mean) | FLOPs, evaluations excluded | FLOPs beyond the warm start | "
             "wall seconds, evaluations excluded |", "|---|---|---|---|---|---|"]

    def fmt(v, spec):
        return "-" if v != v or v is None else format(v, spec)

    for method, rows in points.groupby("method", sort=True):
        lines.append(f"| {method} | {len(rows)} | {rows['pass@1'].mean():.3f} | {fmt(rows.training_flops.mean(), '.3g')} | "
                     f"{fmt(rows.after_warm_start_flops.mean(), '.3g')} | {fmt(rows.training_seconds.mean(), '.0f')} |")
    return "\n".join(lines) + "\n"
