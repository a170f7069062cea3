"""Methods across data seeds and training seeds: per-problem scores, each method's base, the CI table.

A *method* is what :func:`fpa.reporting.labels.method_label` names: the objective, FPA's λ and side,
and the future guard. Its *base* is the same method without the last thing added:

- with a guard (``fpa.guard``): the same objective, λ and side without it;
- FPA-X (λ > 0): X with λ = 0;
- a base objective (λ = 0, no guard): none (the table leaves its difference empty).

A run gives per-problem held-out scores (its headline benchmark's ``samples/<benchmark>.jsonl``,
:func:`fpa.reporting.paired.per_problem`); a run whose samples are not on disk counts with its one
pass@1 (the problem level of the bootstrap then has nothing to resample for it). The reference is a
method too: one per data seed, shared by the training seeds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from fpa.reporting.bootstrap import interval, paired_cells
from fpa.reporting.labels import method_label
from fpa.reporting.paired import per_problem, samples_files
from fpa.reporting.runs import Run

REFERENCE = "reference"
RUN_SCORE = "<run pass@1>"  # the one "problem" of a run whose per-problem samples are missing


@dataclass(frozen=True)
class Method:
    objective: str
    lam: float = 0.0
    apply_to: str = "both"
    guard: str | None = None
    settings: str = ""  # swept values that tell runs of one method apart (Run.settings)

    @classmethod
    def of(cls, run: Run) -> Method:
        return cls(run.objective, run.lam, run.apply_to if run.lam else "both", run.guard, run.settings)

    @property
    def label(self) -> str:
        return method_label(self.objective, self.lam, self.apply_to, self.guard, self.settings)

    @property
    def base(self) -> Method | None:
        if self.guard is not None:
            return Method(self.objective, self.lam, self.apply_to, None, self.settings)
        if self.lam:
            return Method(self.objective, settings=self.settings)
        return None


def run_problem_scores(run: Run) -> tuple[dict[str, float], dict[str, float], str]:
    """(policy per-problem scores, reference per-problem scores, reference model) of a finished run."""
    pol_file, ref_file = samples_files(run.results, run.path)
    pol = per_problem(pol_file) if pol_file else {RUN_SCORE: float(run.results["policy"]["pass@1"])}
    ref = per_problem(ref_file) if ref_file else {RUN_SCORE: float(run.results["reference"]["pass@1"])}
    return pol, ref, str(run.results.get("reference", {}).get("model", run.path))


def method_scores(runs: list[Run]) -> tuple[dict[Method | str, dict], list[Method | str]]:
    """``{method: {data_seed: {training_seed: {problem: score}}}}`` over finished runs, and the methods in order
    (reference first, then by objective's first appearance, base before its variants)."""
    scores: dict = defaultdict(lambda: defaultdict(dict))
    refs: dict = defaultdict(dict)  # data seed -> reference model -> scores
    for run in runs:
        if run.status != "finished" or not run.results:
            continue
        pol, ref, ref_model = run_problem_scores(run)
        scores[Method.of(run)][run.data_seed][run.seed] = pol
        refs[run.data_seed][ref_model] = ref
    for ds, models in refs.items():  # one reference per data seed (several only if runs disagree on it)
        for i, ref in enumerate(models.values()):
            scores[REFERENCE][ds][i] = ref
    objectives = list(dict.fromkeys(m.objective for m in scores if m != REFERENCE))
    order = [REFERENCE] if REFERENCE in scores else []
    order += sorted((m for m in scores if m != REFERENCE),
                    key=lambda m: (objectives.index(m.objective), m.lam, m.apply_to, m.guard or ""))
    return scores, order


def ci_rows(runs: list[Run], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> list[dict]:
    """One row per method: its mean and CI (hierarchical bootstrap), and its paired difference to its base."""
    scores, order = method_scores(runs)
    rows = []
    for method in order:
        cells = {ds: {ts: list(p.values()) for ts, p in runs_.items()} for ds, runs_ in scores[method].items()}
        own = interval(cells, n_boot, level, seed)
        row = {"method": method if method == REFERENCE else method.label, **own}
        base = None if method == REFERENCE else method.base
        if base is not None and base in scores:
            diff = paired_cells(scores[method], scores[base])
            if diff:
                d = interval(diff, n_boot, level, seed)
                row.update({"base": base.label, "diff": d["mean"], "diff_ci_low": d["ci_low"],
                            "diff_ci_high": d["ci_high"], "diff_excludes_zero": d["excludes_zero"],
                            "diff_n_runs": d["n_runs"]})
        rows.append(row)
    return rows


def ci_table(rows: list[dict]) -> str:
    """Markdown of :func:`ci_rows`."""
    if not rows:
        return ""
    pct = round(100 * rows[0]["level"])
    lines = [f"| method | data seeds | runs | problems | pass@1 [{pct}% CI] | base | − base [{pct}% CI] | "
             "excludes 0 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = (f"{r['diff']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}] ({r['diff_n_runs']} paired)"
                if "diff" in r else "")
        excl = ("yes" if r["diff_excludes_zero"] else "no") if "diff" in r else ""
        lines.append(f"| {r['method']} | {r['n_data_seeds']} | {r['n_runs']} | {r['n_problems']} | "
                     f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r.get('base', '')} | {diff} | "
                     f"{excl} |")
    return "\n".join(lines) + "\n"


def control_rows(runs: list[Run], control: str, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> list[dict]:
    """Every method's paired difference to the ``control`` method (its label, e.g. ``RFT``: the control every
    preference method must beat), same data seed, training seed and problems; [] if no run is that method."""
    scores, order = method_scores(runs)
    by_label = {(m if m == REFERENCE else m.label): m for m in order}
    if control not in by_label:
        return []
    rows = []
    for method in order:
        label = method if method == REFERENCE else method.label
        if label == control:
            continue
        # the reference is one "training seed" per data seed; pair it with every run of the control
        mine = ({ds: {ts: runs_[0] for ts in scores[by_label[control]].get(ds, {})}
                 for ds, runs_ in scores[method].items()} if method == REFERENCE else scores[method])
        diff = paired_cells(mine, scores[by_label[control]])
        if diff:
            d = interval(diff, n_boot, level, seed)
            rows.append({"method": label, "control": control, "diff": d["mean"], "ci_low": d["ci_low"],
                         "ci_high": d["ci_high"], "excludes_zero": d["excludes_zero"], "n_runs": d["n_runs"],
                         "level": level})
    return rows


def control_table(rows: list[dict]) -> str:
    """Markdown of :func:`control_rows`."""
    if not rows:
        return ""
    pct = round(100 * rows[0]["level"])
    lines = [f"| method | − {rows[0]['control']} [{pct}% CI] | paired runs | excludes 0 |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['n_runs']} | "
                     f"{'yes' if r['excludes_zero'] else 'no'} |")
    return "\n".join(lines) + "\n"
