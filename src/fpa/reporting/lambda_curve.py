"""Held-out pass@1 against FPA's λ: one point per (objective, λ, side), with the hierarchical-bootstrap CI.

A *family* is an objective at fixed other settings (``Method.settings``); its λ = 0 member is the base
objective. Each point is the family member's mean over data seeds × training seeds with its CI
(:func:`fpa.reporting.bootstrap.interval`), and its paired difference to λ = 0 (same data seed, training
seed and problems). Guarded methods are left out: the guard is its own ablation. A family is plotted when
it has at least three λ values on side ``both``; the one-sided ablations (``fpa.apply_to``) are drawn as
markers beside that curve.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd

from fpa.reporting.bootstrap import interval, paired_cells
from fpa.reporting.methods import REFERENCE, Method, method_scores
from fpa.reporting.runs import Run

_SIDE_MARKERS = {"both": "o", "rejected": "v", "chosen": "^"}
_SIDE_SHIFT = {"rejected": 0.92, "chosen": 1.08}
_SIDE_ORDER = {side: i for i, side in enumerate(_SIDE_MARKERS)}


def lambda_points(runs: list[Run], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per unguarded method: family label, λ, side, pass@1 mean and CI, and − λ=0 with its CI
    (NaN where the family has no λ = 0 runs to pair with, and for λ = 0 itself)."""
    scores, order = method_scores(runs)
    rows = []
    for method in order:
        if method == REFERENCE or method.guard is not None:
            continue
        family = Method(method.objective, settings=method.settings)
        cells = {ds: {ts: list(p.values()) for ts, p in by_ts.items()} for ds, by_ts in scores[method].items()}
        own = interval(cells, n_boot, level, seed)
        row = {"family": family.label, "lam": float(method.lam), "side": method.apply_to, "mean": own["mean"],
               "ci_low": own["ci_low"], "ci_high": own["ci_high"], "n_runs": own["n_runs"],
               "diff": float("nan"), "diff_low": float("nan"), "diff_high": float("nan")}
        diff = paired_cells(scores[method], scores[family]) if method.lam and family in scores else {}
        if diff:
            d = interval(diff, n_boot, level, seed)
            row.update(diff=d["mean"], diff_low=d["ci_low"], diff_high=d["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def swept_families(points: pd.DataFrame) -> list[str]:
    """The families of :func:`lambda_points` with at least three λ values on side ``both``."""
    if points.empty:
        return []
    both = points[points.side == "both"]
    return [f for f, rows in both.groupby("family", sort=False) if rows.lam.nunique() >= 3]


def lambda_table(points: pd.DataFrame) -> str:
    """Markdown of :func:`lambda_points` for the swept families, by family, side and λ."""
    families = swept_families(points)
    if not families:
        return ""
    lines = ["| family | side | λ | runs | pass@1 [95% CI] | − λ=0 [95% CI] |", "|---|---|---|---|---|---|"]
    for family in families:
        rows = points[points.family == family]
        rows = rows.assign(order=rows.side.map(_SIDE_ORDER).fillna(len(_SIDE_ORDER))).sort_values(["order", "lam"])
        for _, r in rows.iterrows():
            diff = "" if pd.isna(r["diff"]) else f"{r['diff']:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}]"
            lines.append(f"| {family} | {r.side} | {r.lam:g} | {r.n_runs} | {r['mean']:.3f} [{r.ci_low:.3f}, "
                         f"{r.ci_high:.3f}] | {diff} |")
    return "\n".join(lines) + "\n"


def lambda_curve(points: pd.DataFrame, path: Path) -> Path | None:
    """Plot :func:`lambda_points` (left: pass@1, right: − λ=0, both with 95% CIs), a row per family of
    :func:`swept_families`; None if there is none."""
    families = swept_families(points)
    if not families:
        return None
    fig, axes = plt.subplots(len(families), 2, figsize=(10, 3.8 * len(families)), squeeze=False)
    for (ax_abs, ax_diff), family in zip(axes, families):
        for side, rows in points[points.family == family].groupby("side", sort=False):
            rows = rows.sort_values("lam")
            x = rows.lam * _SIDE_SHIFT.get(side, 1.0)  # one-sided markers beside the curve, not on it
            style = {"marker": _SIDE_MARKERS.get(side, "s"), "capsize": 3, "elinewidth": 1.2, "lw": 1.5 if side == "both" else 0,
                     "label": f"FPA on {side}" if side != "both" else "FPA on both (λ=0: the base objective)"}
            ax_abs.errorbar(x, rows["mean"], yerr=[rows["mean"] - rows.ci_low, rows.ci_high - rows["mean"]],
                            **style)
            paired = rows["diff"].notna()
            paired, x = rows[paired], x[paired]
            ax_diff.errorbar(x, paired["diff"], yerr=[paired["diff"] - paired.diff_low,
                                                               paired.diff_high - paired["diff"]], **style)
        ax_diff.axhline(0.0, color="grey", lw=0.8)
        for ax, ylabel in ((ax_abs, "held-out pass@1"), (ax_diff, "pass@1 − λ=0 (paired)")):
            ax.set_xscale("symlog", linthresh=0.5)
            ticks = sorted(points[points.family == family].lam.unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("λ (FPA's extrapolation strength)")
            ax.set_ylabel(ylabel)
            ax.set_title(family)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("held-out pass@1 against λ: mean and 95% CI over data seeds × training seeds × problems",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
