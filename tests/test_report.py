"""fpa-report on a hand-built multirun directory: the table's numbers, the plots, failed runs listed."""

import json
import statistics

import pandas as pd
import yaml

from fpa.cli.report import report


def _run(root, name, objective, lam, seed, curve, status="finished", choice=None, ledger=None):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    if choice:  # what Hydra records as the config-group choice, e.g. objective=rft for the SFT loss
        (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {
            "objective": choice}}}}))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"objective": {"_target_": f"fpa.objectives.x.{objective}"}, "fpa": {"lam": lam, "apply_to": "both"},
         "seed": seed}))
    (d / "status.json").write_text(json.dumps({"status": status, **({"error": "ValueError: boom"}
                                                                  if status == "failed" else {})}))
    if status != "finished":
        return
    steps = list(range(0, 10 * len(curve), 10))
    (d / "csv" / "version_0").mkdir(parents=True)
    pd.DataFrame({"step": steps, "eval/arith/pass@1": curve, "train/logps/chosen": [-3.0] * len(curve),
                  "train/logps/rejected": [-4.0] * len(curve), "train/coef/future/chosen": [0.05] * len(curve),
                  "train/coef/future/rejected": [-0.05] * len(curve)}).to_csv(d / "csv/version_0/metrics.csv",
                                                                            index=False)
    (d / "results.json").write_text(json.dumps({
        "reference": {"benchmark": "arith", "pass@1": 0.4, "model": "cache/sft/ref"}, "policy": {"benchmark": "arith", "pass@1": curve[-1]},
        **({"ledger": ledger} if ledger else {})}))


def test_report_table_plots_and_failed_runs(tmp_path):
    root = tmp_path / "multirun"
    _run(root, "0", "DPO", 0.0, 0, [0.40, 0.50, 0.45])
    _run(root, "1", "DPO", 0.0, 1, [0.40, 0.42, 0.44])
    _run(root, "2", "DPO", 1.0, 0, [0.40, 0.55, 0.60])
    _run(root, "3", "KTO", 1.0, 0, [], status="failed")
    _run(root, "4", "KTO", 0.0, 0, [], status="running")
    _run(root, "5", "SFT", 0.0, 0, [0.40, 0.41, 0.43], choice="rft")
    table, plots = report([str(root)], tmp_path / "out")

    frame = pd.read_csv(tmp_path / "out" / "report.csv")
    dpo = frame[(frame.method == "DPO") & (frame.benchmark == "arith")].iloc[0]
    assert dpo.final_mean == statistics.mean([0.45, 0.44]) and dpo.n == 2
    assert abs(dpo.final_std - statistics.stdev([0.45, 0.44])) < 1e-12
    assert dpo.best_mean == statistics.mean([0.50, 0.44])
    fpa = frame[frame.method == "FPA-DPO (λ=1)"].iloc[0]
    assert fpa.final_mean == 0.60 and fpa.n == 1
    assert abs(frame[frame.method == "reference"].iloc[0].final_mean - 0.4) < 1e-12

    heldout = frame[(frame.method == "DPO") & (frame.benchmark == "heldout")].iloc[0]
    assert heldout.final_mean == statistics.mean([0.45, 0.44])  # results.json, the end-of-run evaluation
    ref = frame[frame.method == "reference"]
    assert set(ref.benchmark) == {"heldout", "arith"} and (ref.n == 1).all()  # one reference, not one per run
    assert abs(ref[ref.benchmark == "arith"].iloc[0].final_mean - 0.40) < 1e-12  # step 0 of the curves

    assert "| method | seeds | heldout final | arith final | arith best |" in table
    assert "| DPO | 2 | 0.445 ± 0.007 | 0.445 ± 0.007 | 0.470 ± 0.042 |" in table
    assert "failed (ValueError: boom)" in table and "FPA-KTO (λ=1)" in table
    assert "`: interrupted — KTO" in table  # "running" on disk, no live process behind it
    assert frame[(frame.method == "RFT") & (frame.benchmark == "heldout")].iloc[0].final_mean == 0.43
    assert {p.name for p in plots} == {"heldout_final.png", "pass1_vs_step.png", "logps_vs_step.png",
                                       "coef_vs_step.png", "pass1_bands.png"}
    assert all(p.stat().st_size > 1000 for p in plots)


def test_runs_are_found_in_job_order_and_fpa_rows_follow_their_base(tmp_path):
    root = tmp_path / "multirun"
    _run(root, "2", "DPO", 1.0, 0, [0.40, 0.50])
    _run(root, "10", "KTO", 0.0, 0, [0.40, 0.30])
    _run(root, "11", "DPO", 0.0, 0, [0.40, 0.45])
    from fpa.reporting.runs import find_run_dirs

    assert [p.name for p in find_run_dirs([root])] == ["2", "10", "11"]  # not "10", "11", "2"
    table, _ = report([str(root)], tmp_path / "out")
    assert table.index("| DPO |") < table.index("| FPA-DPO (λ=1) |") < table.index("| KTO |")


def test_report_plots_pass1_against_ledger_flops_and_seconds(tmp_path):
    from fpa.ledger import entry, ledger
    from fpa.reporting.plots import compute_points
    from fpa.reporting.runs import load_runs

    def made(flops_train, seconds):  # a run's ledger: a shared cached generation plus its own training
        gen = {**entry(None, seconds=5.0, generated=100, cached=True), "flops": 1000}
        return ledger({"generate": gen, "train": {**entry(None, seconds=seconds), "flops": flops_train}})

    root = tmp_path / "multirun"
    _run(root, "0", "DPO", 0.0, 0, [0.40, 0.45], ledger=made(4000, 2.0))
    _run(root, "1", "DPO", 1.0, 0, [0.40, 0.55], ledger=made(9000, 3.5))
    _run(root, "2", "DPO", 0.0, 1, [0.40, 0.44])  # finished before the ledger: no point
    points = compute_points(load_runs([root]))
    assert points[["method", "pass@1", "flops", "seconds", "cached_flops"]].values.tolist() == [
        ["DPO", 0.45, 5000, 7.0, 1000], ["FPA-DPO (λ=1)", 0.55, 10000, 8.5, 1000]]
    _, plots = report([str(root)], tmp_path / "out")
    compute = [p for p in plots if p.name == "pass1_vs_compute.png"]
    assert compute and compute[0].stat().st_size > 1000
    assert pd.read_csv(tmp_path / "out" / "compute.csv").flops.tolist() == [5000, 10000]


def test_runs_of_one_method_with_other_swept_values_are_told_apart(tmp_path):
    """A hyperparameter grid (objective.beta × train.max_steps) must not pool its points under one 'DPO' label."""
    from fpa.reporting.methods import Method
    from fpa.reporting.runs import Run, name_settings

    dpo = {"objective": {"_target_": "fpa.objectives.dpo.DPO"}, "fpa": {"lam": 0.0}}
    fpa = {"objective": {"_target_": "fpa.objectives.dpo.DPO"}, "fpa": {"lam": 1.0}}

    def run(cfg, **over):
        return Run(path=tmp_path, status="finished", config=cfg,
                   overrides={"paths.cache_dir": "/c", "seed": "0", **over})

    runs = [run(dpo, **{"objective.beta": "0.1", "train.max_steps": "600"}),
            run(dpo, **{"objective.beta": "0.5", "train.max_steps": "600"}),
            run(fpa, **{"objective.beta": "0.1", "train.max_steps": "600"}),
            run(dpo, **{"objective.beta": "0.1", "train.max_steps": "600", "seed": "1"})]
    name_settings(runs)
    assert [r.label for r in runs] == ["DPO [beta=0.1]", "DPO [beta=0.5]", "FPA-DPO (λ=1) [beta=0.1]",
                                       "DPO [beta=0.1]"]
    # the paired base of an FPA run is the same objective at the same swept values
    assert Method.of(runs[2]).base == Method.of(runs[0])
    lone = [run(dpo, **{"objective.beta": "0.1"})]
    name_settings(lone)
    assert lone[0].label == "DPO"  # nothing varies: the plain method name
