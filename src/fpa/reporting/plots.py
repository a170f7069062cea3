"""PNG plots from runs' metric curves: one panel per objective, FPA off against FPA on."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fpa.reporting.compute_curves import (after_warm_start_flops, curve_points, training_flops,  # noqa: E402
                                          training_seconds)
from fpa.reporting.runs import Run  # noqa: E402
from fpa.reporting.table import HELDOUT, pass1_columns, results_frame  # noqa: E402


_STYLES = ["-", "--", ":", "-."]


def _mean_curve(runs: list[Run], column: str) -> pd.Series | None:
    curves = []
    for r in runs:
        if r.metrics is None or column not in r.metrics or "step" not in r.metrics:
            continue
        s = r.metrics[["step", column]].dropna().groupby("step")[column].mean()
        if len(s):
            curves.append(s)
    return pd.concat(curves, axis=1).mean(axis=1) if curves else None


def curve_grid(runs: list[Run], columns: dict[str, str], title: str, path: Path, ylabel: str,
               smooth: int = 1) -> Path | None:
    """Panel per objective; a line per (method label, column) averaged over seeds.

    ``smooth``: centred rolling mean over that many logged points (per-batch training metrics are noisy).
    """
    by_objective: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.metrics is not None:
            by_objective[r.objective][r.label].append(r)
    panels = [(obj, labels) for obj, labels in sorted(by_objective.items())
              if any(_mean_curve(rs, c) is not None for rs in labels.values() for c in columns.values())]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False, sharey=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (obj, labels) in zip(axes.flat, panels):
        # colour = method (FPA off first, in blue), line style = which curve (benchmark, chosen/rejected)
        ordered = sorted(labels, key=lambda lb: (lb != obj, lb))
        for i, label in enumerate(ordered):
            for j, (name, col) in enumerate(columns.items()):
                curve = _mean_curve(labels[label], col)
                if curve is not None and smooth > 1:
                    curve = curve.rolling(smooth, center=True, min_periods=1).mean()
                if curve is not None:
                    ax.plot(curve.index, curve.values, _STYLES[j % len(_STYLES)], color=f"C{i}",
                            label=f"{label} {name}".strip(), linewidth=1.4, marker="." if len(curve) < 12 else None)
        _label_axes(ax, obj, ylabel)
    return _save(fig, path, title)


def band_curve(runs: list[Run], column: str, n_boot: int = 500, level: float = 0.95) -> pd.DataFrame | None:
    """Per step: the mean over data seeds of the mean over training seeds, and the hierarchical bootstrap's
    CI (data seeds, then training seeds; a logged curve point has no per-problem scores)."""
    from fpa.reporting.bootstrap import interval

    points: dict = defaultdict(lambda: defaultdict(dict))  # step -> data seed -> training seed -> value
    for r in runs:
        if r.metrics is None or column not in r.metrics or "step" not in r.metrics:
            continue
        for step, value in r.metrics[["step", column]].dropna().groupby("step")[column].last().items():
            points[step][r.data_seed][r.seed] = [float(value)]
    if not points:
        return None
    rows = []
    for step in sorted(points):
        ci = interval(points[step], n_boot=n_boot, level=level)
        rows.append({"step": step, "mean": ci["mean"], "low": ci["ci_low"], "high": ci["ci_high"],
                     "n_runs": ci["n_runs"]})
    return pd.DataFrame(rows).set_index("step")


def band_grid(runs: list[Run], columns: dict[str, str], title: str, path: Path, ylabel: str) -> Path | None:
    """Panel per objective; per method label a mean line with its 95% CI band over seeds (see :func:`band_curve`)."""
    by_objective: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.metrics is not None and r.status == "finished":
            by_objective[r.objective][r.label].append(r)
    panels = []
    for obj, labels in sorted(by_objective.items()):
        lines = [(label, name, band_curve(labels[label], col)) for label in sorted(labels, key=lambda lb: (lb != obj, lb))
                 for name, col in columns.items()]
        lines = [line for line in lines if line[2] is not None]
        if lines:
            panels.append((obj, lines))
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (obj, lines) in zip(axes.flat, panels):
        colours = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(lb for lb, _, _ in lines))}
        names = list(dict.fromkeys(n for _, n, _ in lines))
        for label, name, band in lines:
            style = _STYLES[names.index(name) % len(_STYLES)]
            ax.plot(band.index, band["mean"], style, color=colours[label], linewidth=1.4,
                    label=f"{label} {name} (n={int(band['n_runs'].max())})".strip())
            ax.fill_between(band.index, band["low"], band["high"], color=colours[label], alpha=0.2, linewidth=0)
        _label_axes(ax, obj, ylabel)
    return _save(fig, path, title)


def eval_columns(runs: list[Run]) -> dict[str, str]:
    """The pass@1 curve per benchmark logged during training."""
    cols = {}
    for r in runs:
        if r.metrics is not None:
            cols.update(pass1_columns(r.metrics.columns))
    return {name if len(cols) > 1 else "": cols[name] for name in sorted(cols)}


def heldout_bars(frame: pd.DataFrame, path: Path) -> Path | None:
    """Final held-out pass@1 per method (``results_frame``); FPA on in its own colour, reference dashed."""
    if frame.empty:
        return None
    rows = frame[frame.benchmark == HELDOUT]
    methods = rows[rows.method != "reference"]
    if methods.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(methods) + 2), 4.2))
    colours = ["tab:orange" if m.startswith("FPA-") else "tab:gray" if m == "RFT" else "tab:blue"
               for m in methods.method]
    ax.bar(range(len(methods)), methods.final_mean, yerr=methods.final_std, color=colours, capsize=3)
    ref = rows[rows.method == "reference"]
    if len(ref):
        ax.axhline(float(ref.final_mean.iloc[0]), color="k", linestyle="--", linewidth=1, label="reference")
    control = methods[methods.method == "RFT"]  # the control every preference method must beat
    if len(control):
        ax.axhline(float(control.final_mean.iloc[0]), color="tab:gray", linestyle=":", linewidth=1.2, label="RFT")
    if len(ref) or len(control):
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(methods)), methods.method, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("held-out pass@1 (end of training)")
    ax.set_title("final held-out pass@1, mean ± std over seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compute_points(runs: list[Run]) -> pd.DataFrame:
    """One row per finished run with a compute ledger: method, held-out pass@1, total FLOPs and wall seconds.

    Totals attribute every stage the run used in full, a shared cached one (warm start, generation,
    reference evaluation) included; ``cached_flops`` is that shared part, for a report that splits it.
    """
    rows = []
    for r in runs:
        total = ((r.results or {}).get("ledger") or {}).get("total")
        if r.status != "finished" or not total:
            continue
        rows.append({"run": str(r.path), "method": r.label, "data_seed": r.data_seed, "seed": r.seed,
                     "pass@1": float(r.results["policy"]["pass@1"]), "flops": total.get("flops"),
                     "seconds": total.get("seconds"), "cached_flops": total.get("cached_flops"),
                     "training_flops": training_flops(r), "after_warm_start_flops": after_warm_start_flops(r),
                     "training_seconds": training_seconds(r)})
    return pd.DataFrame(rows, columns=["run", "method", "data_seed", "seed", "pass@1", "flops", "seconds",
                                       "cached_flops", "training_flops", "after_warm_start_flops", "training_seconds"])


def compute_scatter(runs: list[Run], path: Path) -> Path | None:
    """Held-out pass@1 against total FLOPs (log scale) and against total wall seconds, a point per run."""
    points = compute_points(runs)
    if points.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for ax, x, xlabel in ((axes[0], "flops", "total FLOPs (ledger, generation included)"),
                          (axes[1], "seconds", "total wall seconds (ledger)")):
        for i, (method, rows) in enumerate(points.dropna(subset=[x]).groupby("method", sort=True)):
            ax.scatter(rows[x], rows["pass@1"], color=f"C{i}", label=method, s=24)
        if x == "flops" and points[x].notna().any():
            ax.set_xscale("log")
        _label_axes(ax, f"pass@1 vs {x}", "held-out pass@1")
        ax.set_xlabel(xlabel)
    return _save(fig, path, "held-out pass@1 against compute, one point per run (shared cached stages counted "
                            "in full in every run that uses them)")


def compute_curves(runs: list[Run], path: Path) -> Path | None:
    """pass@1 of the in-training evaluations against FLOPs spent so far (log scale, :mod:`fpa.reporting.compute_curves`),
    a line per run, a colour per method."""
    points = curve_points(runs)
    if points.empty or points.step.nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for i, (method, rows) in enumerate(points.groupby("method", sort=True)):
        for j, (_, run) in enumerate(rows.groupby("run", sort=True)):
            run = run.sort_values("step")
            ax.plot(run["flops"], run["pass@1"], color=f"C{i % 10}", marker=".", lw=1.2,
                    label=method if j == 0 else None)
    ax.set_xscale("log")
    _label_axes(ax, "pass@1 vs compute", "pass@1 (in-training evaluation subset)")
    ax.set_xlabel("FLOPs spent so far (one-off stages + training + rollouts; evaluations excluded)")
    return _save(fig, path, "pass@1 during training against the compute spent so far, one line per run")


def all_plots(runs: list[Run], out: Path, frame: pd.DataFrame | None = None) -> list[Path]:
    """Every plot; ``frame`` is ``results_frame(runs)`` when the caller already has it."""
    made = [
        heldout_bars(results_frame(runs) if frame is None else frame, out / "heldout_final.png"),
        curve_grid(runs, eval_columns(runs), "held-out pass@1 during training", out / "pass1_vs_step.png",
                   "pass@1"),
        band_grid(runs, eval_columns(runs), "pass@1 during training: mean over seeds, 95% CI band (bootstrap over "
                  "data seeds, then training seeds)", out / "pass1_bands.png", "pass@1"),
        curve_grid(runs, {"chosen": "train/logps/chosen", "rejected": "train/logps/rejected"},
                   "sequence log-probs of chosen (correct) and rejected completions (rolling mean of 5 logs)",
                   out / "logps_vs_step.png", "log π(y|x)", smooth=5),
        curve_grid(runs, {"chosen": "train/coef/future/chosen", "rejected": "train/coef/future/rejected"},
                   "gradient coefficients at the policy they are taken from (rolling mean of 5 logs)",
                   out / "coef_vs_step.png", "coefficient", smooth=5),
        curve_grid(runs, {"": "entanglement/cosine"}, "cosine of the chosen and rejected sequence-log-prob gradients "
                   "on the fixed probe (callbacks.entanglement)", out / "entanglement_vs_step.png", "cosine"),
        compute_scatter(runs, out / "pass1_vs_compute.png"),
        compute_curves(runs, out / "pass1_vs_flops_curves.png"),
    ]
    return [p for p in made if p is not None]


def _label_axes(ax, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, path: Path, title: str) -> Path:
    fig.suptitle(textwrap.fill(title, width=int(11 * fig.get_figwidth())), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
