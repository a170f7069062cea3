"""Results table from runs: final and best pass@1 per benchmark, mean ± std over seeds."""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from fpa.reporting.runs import Run

HELDOUT = "heldout"  # the end-of-run evaluation (the benchmark suite: benchmark.n_problems x benchmark.k), results.json
_NOT_BENCHMARKS = ("reference", "policy", "avg")  # eval/<these>/pass@1 are summaries, not curves


def pass1_columns(columns) -> dict[str, str]:
    """Benchmark name -> its ``eval/<benchmark>/pass@1`` column, for the curves logged during training."""
    out = {}
    for col in columns:
        parts = col.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[2] == "pass@1" and parts[1] not in _NOT_BENCHMARKS:
            out[parts[1]] = col
    return out


def _curves(run: Run) -> dict[str, pd.Series]:
    """Per benchmark, pass@1 against step from the evaluations logged during training."""
    if run.metrics is None or "step" not in run.metrics:
        return {}
    curves = {name: run.metrics[["step", col]].dropna().groupby("step")[col].last()
              for name, col in pass1_columns(run.metrics.columns).items()}
    return {name: c for name, c in curves.items() if len(c)}


def run_scores(run: Run) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Per benchmark: the trained policy's final score, its best after step 0 (curves only), and the reference's.

    ``heldout`` is the end-of-run evaluation in results.json; the curves' step 0, when logged, is the
    reference itself, so it counts for the reference and not as the policy's best.
    """
    curves = _curves(run)
    final = {name: float(c.iloc[-1]) for name, c in curves.items()}
    best = {name: max(final[name], float(c[c.index > 0].max())) if (c.index > 0).any() else final[name]
            for name, c in curves.items()}
    reference = {name: float(c.loc[0]) for name, c in curves.items() if 0 in c.index}
    if run.results is not None:
        final[HELDOUT] = float(run.results["policy"]["pass@1"])
        reference[HELDOUT] = float(run.results["reference"]["pass@1"])
    return final, best, reference


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
        final, best, reference = run_scores(run)
        for bench, value in final.items():
            groups[(run.label, bench)]["final"].append(value)
            if bench in best:
                groups[(run.label, bench)]["best"].append(best[bench])
        ref_model = str((run.results or {}).get("reference", {}).get("model", run.path))
        for bench, value in reference.items():
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
