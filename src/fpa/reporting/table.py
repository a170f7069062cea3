"""Results table from runs: final and best pass@1 per benchmark, mean ± std over seeds."""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from fpa.reporting.runs import Run

_EVAL_PREFIX = "eval/"
_PASS1 = "/pass@1"


HELDOUT = "heldout"  # the end-of-run evaluation (eval.n_problems x eval.k), results.json


def _curves(run: Run) -> dict[str, pd.Series]:
    """Per benchmark, pass@1 against step from the evaluations logged during training."""
    curves: dict[str, pd.Series] = {}
    if run.metrics is None or "step" not in run.metrics:
        return curves
    for col in run.metrics.columns:
        name = col[len(_EVAL_PREFIX): -len(_PASS1)] if col.startswith(_EVAL_PREFIX) and col.endswith(_PASS1) else ""
        if name and name not in ("reference", "policy", "avg"):
            series = run.metrics[["step", col]].dropna().groupby("step")[col].last()
            if len(series):
                curves[name] = series
    return curves


def final_scores(run: Run) -> dict[str, float]:
    """Per benchmark, the last evaluation of the trained policy; ``heldout`` is the end-of-run eval."""
    scores = {name: float(c.iloc[-1]) for name, c in _curves(run).items()}
    if run.results is not None:
        scores[HELDOUT] = float(run.results["policy"]["pass@1"])
    return scores


def best_scores(run: Run) -> dict[str, float]:
    """Per benchmark curve, the best evaluation after step 0 (step 0 is the reference itself)."""
    best = {name: v for name, v in final_scores(run).items() if name != HELDOUT}
    for name, c in _curves(run).items():
        trained = c[c.index > 0]
        if len(trained):
            best[name] = max(best[name], float(trained.max()))
    return best


def reference_scores(run: Run) -> dict[str, float]:
    """The reference on the same benchmarks: its end-of-run eval, and step 0 of curves that start there."""
    scores = {name: float(c.loc[0]) for name, c in _curves(run).items() if 0 in c.index}
    if run.results is not None:
        scores[HELDOUT] = float(run.results["reference"]["pass@1"])
    return scores


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def results_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per (method, benchmark): final/best pass@1 mean and std over seeds, and n seeds."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: {"final": [], "best": []})
    references: dict[str, dict[str, float]] = defaultdict(dict)  # benchmark -> reference model -> score
    order: dict[str, tuple] = {}  # label -> (objective's first appearance, λ, side): FPA variants follow their base
    objectives: list[str] = []
    for run in runs:
        if run.status != "finished":
            continue
        if run.objective not in objectives:
            objectives.append(run.objective)
        order.setdefault(run.label, (objectives.index(run.objective), run.lam, run.apply_to))
        best = best_scores(run)
        for bench, value in final_scores(run).items():
            groups[(run.label, bench)]["final"].append(value)
            if bench in best:
                groups[(run.label, bench)]["best"].append(best[bench])
        ref_model = str((run.results or {}).get("reference", {}).get("model", run.path))
        for bench, value in reference_scores(run).items():
            references[bench][ref_model] = value  # one entry per reference model, however many runs share it
    for bench, per_model in references.items():
        groups[("reference", bench)]["final"] = list(per_model.values())
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
    rank = {m: i for i, m in enumerate(["reference", *sorted(order, key=order.get)])}
    return frame.sort_values(["benchmark", "method"], key=lambda s: s.map(rank) if s.name == "method" else
                             s.map(lambda b: (b != HELDOUT, b))).reset_index(drop=True)


def _cell(mean: float, std: float) -> str:
    return "-" if pd.isna(mean) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(frame: pd.DataFrame, runs: list[Run]) -> str:
    """A row per method; per benchmark its final pass@1 and, for curves logged in training, the best."""
    benches = list(dict.fromkeys(frame["benchmark"])) if not frame.empty else []
    has_best = {b: bool(frame[(frame.benchmark == b)].get("best_mean", pd.Series(dtype=float)).notna().any())
                for b in benches}
    head = ["method", "seeds"]
    for b in benches:
        head += [f"{b} final", f"{b} best"] if has_best[b] else [f"{b} final"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in dict.fromkeys(frame["method"]) if not frame.empty else []:
        rows = frame[frame.method == method].set_index("benchmark")
        cells = [method, str(int(rows["n"].max()))]
        for b in benches:
            r = rows.loc[b] if b in rows.index else None
            cells.append("-" if r is None else _cell(r.final_mean, r.final_std))
            if has_best[b]:
                cells.append("-" if r is None else _cell(r.get("best_mean", float("nan")), r.get("best_std", 0.0)))
        lines.append("| " + " | ".join(cells) + " |")
    others = [r for r in runs if r.status != "finished"]
    if others:
        lines += ["", "Runs not in the table:", ""]
        lines += [f"- `{r.path}`: {r.status}" + (f" ({r.error})" if r.error else "") + f" — {r.label}, seed {r.seed}"
                  for r in others]
    return "\n".join(lines) + "\n"
