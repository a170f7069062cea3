"""Results table from runs: final and best pass@1 per benchmark, mean ± std over seeds."""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from fpa.reporting.runs import Run

_EVAL_PREFIX = "eval/"
_PASS1 = "/pass@1"


def final_scores(run: Run) -> dict[str, float]:
    """Per benchmark, the last evaluation of the trained policy."""
    scores: dict[str, float] = {}
    if run.metrics is not None:
        for col in run.metrics.columns:
            if col.startswith(_EVAL_PREFIX) and col.endswith(_PASS1) and not col.startswith("eval/reference/"):
                series = run.metrics[col].dropna()
                if len(series):
                    scores[col[len(_EVAL_PREFIX): -len(_PASS1)]] = float(series.iloc[-1])
    if run.results is not None:
        pol = run.results["policy"]
        scores.setdefault(pol.get("benchmark", "heldout"), float(pol["pass@1"]))
        scores.pop("policy", None)
    return scores


def best_scores(run: Run) -> dict[str, float]:
    """Per benchmark, the best evaluation over training (falls back to the final one)."""
    best = dict(final_scores(run))
    if run.metrics is not None:
        for col in run.metrics.columns:
            if col.startswith(_EVAL_PREFIX) and col.endswith(_PASS1) and "reference" not in col:
                name = col[len(_EVAL_PREFIX): -len(_PASS1)]
                if name in best:
                    best[name] = max(best[name], float(run.metrics[col].max()))
    return best


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def results_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per (method, benchmark): final/best pass@1 mean and std over seeds, and n seeds."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: {"final": [], "best": []})
    order: list[str] = []
    for run in runs:
        if run.status != "finished":
            continue
        if run.label not in order:
            order.append(run.label)
        best = best_scores(run)
        for bench, value in final_scores(run).items():
            groups[(run.label, bench)]["final"].append(value)
            groups[(run.label, bench)]["best"].append(best[bench])
        if run.results is not None:
            groups[("reference", run.results["reference"].get("benchmark", "heldout"))]["final"].append(
                float(run.results["reference"]["pass@1"]))
    rows = []
    for (label, bench), v in groups.items():
        fm, fs = _mean_std(v["final"])
        row = {"method": label, "benchmark": bench, "final_mean": fm, "final_std": fs, "n": len(v["final"])}
        if v["best"]:
            row["best_mean"], row["best_std"] = _mean_std(v["best"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    rank = {m: i for i, m in enumerate(["reference", *order])}
    return frame.sort_values(["benchmark", "method"], key=lambda s: s.map(rank) if s.name == "method" else s
                             ).reset_index(drop=True)


def markdown_table(frame: pd.DataFrame, runs: list[Run]) -> str:
    lines = ["| method | benchmark | final pass@1 | best pass@1 | seeds |", "|---|---|---|---|---|"]
    for r in frame.itertuples():
        best = "-" if pd.isna(getattr(r, "best_mean", float("nan"))) else f"{r.best_mean:.3f} ± {r.best_std:.3f}"
        lines.append(f"| {r.method} | {r.benchmark} | {r.final_mean:.3f} ± {r.final_std:.3f} | {best} | {r.n} |")
    others = [r for r in runs if r.status != "finished"]
    if others:
        lines += ["", "Runs not in the table:", ""]
        lines += [f"- `{r.path}`: {r.status}" + (f" ({r.error})" if r.error else "") + f" — {r.label}, seed {r.seed}"
                  for r in others]
    return "\n".join(lines) + "\n"
