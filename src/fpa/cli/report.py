"""fpa-report: aggregate a multirun directory (or run directories) into a table and plots.

    fpa-report runs=outputs/multirun/2026-11-29_12-00-00        # writes report.md/.csv and plots there
    fpa-report 'runs=[outputs/runs/a,outputs/runs/b]' out=docs/results
    fpa-report 'runs=[A,B]' 'methods=[DPO,FPA-DPO (*)]' 'data_seeds=[1,2,3]'   # only those runs
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig

from fpa.cli.app import hydra_app
from fpa.guards import ConfigError

from fpa.reporting.compute_curves import compute_table
from fpa.reporting.lambda_curve import lambda_curve, lambda_points, lambda_table
from fpa.reporting.methods import ci_rows, ci_table, control_rows, control_table
from fpa.reporting.paired import difference_table
from fpa.reporting.plots import all_plots, compute_points
from fpa.reporting.runs import load_runs
from fpa.reporting.table import markdown_table, results_frame


def select(runs: list, methods: list[str] | None = None, data_seeds: list[int] | None = None) -> list:
    """The runs whose method label matches one of ``methods`` (``*`` stands for any text, everything else is literal:
    ``FPA-DPO (*)``, ``GRPO [*]``) and whose data seed is one of ``data_seeds``; None keeps all."""
    import re

    patterns = [re.compile(".*".join(map(re.escape, m.split("*"))) + r"\Z") for m in methods or []]
    return [r for r in runs if (methods is None or any(p.match(r.label) for p in patterns))
            and (data_seeds is None or r.data_seed in data_seeds)]


def report(roots: list[str], out: Path, methods: list[str] | None = None,
           data_seeds: list[int] | None = None, control: str | list[str] | None = None) -> tuple[str, list[Path]]:
    runs = select(load_runs(roots), methods, data_seeds)
    if not runs:
        raise SystemExit(f"fpa-report: no run directories under {', '.join(map(str, roots))}"
                         + (" match methods / data_seeds" if methods is not None or data_seeds is not None else ""))
    frame = results_frame(runs)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "report.csv", index=False)
    table = markdown_table(frame, runs)
    rows = ci_rows(runs)
    if rows:
        import pandas as pd

        pd.DataFrame(rows).to_csv(out / "report_ci.csv", index=False)
        table += ("\nHeld-out pass@1 over data seeds × training seeds: mean and 95% CI by a hierarchical bootstrap "
                  "(data seeds, then training seeds, then problems); − base: the paired difference to the same "
                  "method without its last addition (FPA-X: X; + guard: without the guard), same data seed, "
                  "training seed and problems:\n\n" + ci_table(rows))
    for one in [control] if isinstance(control, str) else control or []:
        versus = control_rows(runs, one)
        table += (f"\nEvery method against {one} (the control), paired by data seed, training seed and problem:"
                  f"\n\n{control_table(versus)}" if versus else f"\nNo finished run of the control {one!r}.\n")
    by_lambda = lambda_points(runs)
    if lambda_table(by_lambda):
        by_lambda.to_csv(out / "lambda.csv", index=False)
        table += ("\nHeld-out pass@1 against FPA's λ (`lambda.csv`, `pass1_vs_lambda.png`; guarded runs left out), "
                  "mean and 95% CI as above; − λ=0: paired with the base objective:\n\n" + lambda_table(by_lambda))
    paired = difference_table(runs)
    if paired:
        table += "\nEach run against its reference, on the same problems:\n\n" + paired
    points = compute_points(runs)
    if not points.empty:
        points.to_csv(out / "compute.csv", index=False)
        table += ("\nCompute (the ledger, `compute.csv`; the one-off warm start and generation charged in full to "
                  "every run that uses them):\n\n" + compute_table(points))
    (out / "report.md").write_text(table)
    plots = all_plots(runs, out, frame)
    return table, plots + [p for p in [lambda_curve(by_lambda, out / "pass1_vs_lambda.png")] if p is not None]


def check(cfg: DictConfig) -> tuple[list[str], Path]:
    """The run directories and the output directory, checked before anything is read."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, "runs"):
        raise ConfigError("runs: set runs=<multirun directory> or runs=[<run dir>,...]")
    roots = [str(r) for r in cfg.runs] if isinstance(cfg.runs, ListConfig) else [str(cfg.runs)]
    missing = [r for r in roots if not Path(r).is_dir()]
    if missing:
        raise ConfigError(f"runs: no such directory: {', '.join(missing)}")
    out = Path(cfg.out or roots[0])
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file, not a directory")
    return roots, out


@hydra_app("report")
def main(cfg: DictConfig) -> None:
    try:
        roots, out = check(cfg)
    except ConfigError as err:
        raise SystemExit(f"fpa-report: {err}") from None
    def listed(key):
        value = cfg.get(key)
        return None if value is None else list(value) if isinstance(value, ListConfig) else [value]

    table, plots = report(roots, out, listed("methods"), listed("data_seeds"), listed("control"))
    print(table)
    for p in plots:
        print("plot:", p)


if __name__ == "__main__":
    main()
