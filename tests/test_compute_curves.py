"""pass@1 against FLOPs so far (fpa.reporting.compute_curves), on synthetic runs with a known answer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fpa.reporting.compute_curves import curve_points, flops_at, training_flops
from fpa.reporting.plots import compute_curves, compute_points
from fpa.reporting.runs import Run


def _run(path, stages, steps=10, curve=None):
    results = {"ledger": {"stages": stages, "total": {"flops": sum(s["flops"] or 0 for s in stages.values()),
                                                      "seconds": 1.0, "cached_flops": 0}},
               "policy": {"pass@1": 0.5}}
    metrics = pd.DataFrame(curve or {"step": [0, 5, 10], "eval/arith/pass@1": [0.2, 0.3, 0.4]})
    return Run(path=Path(path), status="finished", config={"train": {"max_steps": steps}, "data_seed": 1},
               results=results, metrics=metrics)


def test_offline_run_spends_its_one_off_stages_first_then_training_linearly():
    run = _run("off", {"sft": {"flops": 100}, "generate": {"flops": 50}, "train": {"flops": 1000},
                       "eval_reference": {"flops": 7}, "eval_policy": {"flops": 7}})
    assert flops_at(run, 0) == 150 and flops_at(run, 5) == 650 and flops_at(run, 10) == 1150
    assert training_flops(run) == 1150  # the total without evaluations


def test_online_run_spends_each_round_before_its_steps():
    rounds = [{"step": 0, "flops": 10, "seconds": 0.1}, {"step": 4, "flops": 20, "seconds": 0.1},
              {"step": 8, "flops": 40, "seconds": 0.1}]
    run = _run("on", {"sft": {"flops": 100}, "rollouts": {"flops": 70, "rounds": rounds}, "train": {"flops": 1000},
                      "eval_policy": {"flops": 9}})
    assert flops_at(run, 0) == 100  # round 0 is sampled before step 0 is taken, but not yet spent at step 0's eval
    assert flops_at(run, 1) == 100 + 100 + 10
    assert flops_at(run, 5) == 100 + 500 + 30
    assert flops_at(run, 10) == 100 + 1000 + 70 == training_flops(run)
    points = curve_points([run])
    assert list(points.step) == [0, 5, 10] and list(points.flops) == [100, 630, 1170]
    assert compute_points([run]).training_flops.tolist() == [1170]
    assert compute_points([run]).after_warm_start_flops.tolist() == [1070]
    from fpa.reporting.compute_curves import compute_table

    run.results["ledger"]["stages"] = {k: {**v, "seconds": 2.0} for k, v in run.results["ledger"]["stages"].items()}
    table = compute_table(compute_points([run]))
    assert "| ? | 1 | 0.500 | 1.17e+03 | 1.07e+03 | 6 |" in table  # no objective in the config: "?"; sft + rollouts + train: 3 × 2 s


def test_runs_without_flops_give_no_points(tmp_path):
    run = _run("none", {"sft": {"flops": None}, "train": {"flops": 10}})
    assert flops_at(run, 3) is None and curve_points([run]).empty
    assert compute_curves([run], tmp_path / "c.png") is None
    ok = _run("ok", {"train": {"flops": 10}})
    assert compute_curves([ok, run], tmp_path / "c.png") == tmp_path / "c.png" and (tmp_path / "c.png").stat().st_size
    assert pytest.approx(flops_at(ok, 2.5)) == 2.5


def test_online_runs_are_told_apart_from_offline_ones_of_the_same_objective():
    from fpa.reporting.runs import name_settings

    def run(path, every, lam):
        return Run(path=Path(path), status="finished", config={"objective": {"_target_": "fpa.objectives.dpo.DPO"},
                   "fpa": {"lam": lam}, "train": {"rollout_every": every}}, overrides={"online_method": path})

    runs = [run("offline_dpo", 0, 0.0), run("semi_dpo", 25, 0.0), run("semi_fpa_dpo", 25, 1.0)]
    name_settings(runs)
    assert [r.label for r in runs] == ["DPO", "DPO [rollout_every=25]", "FPA-DPO (λ=1) [rollout_every=25]"]


def test_report_selects_runs_by_method_pattern_and_data_seed():
    from fpa.cli.report import select

    def run(name, lam, guard, data_seed):
        return Run(path=Path(name), status="finished", config={"objective": {"_target_": "fpa.objectives.dpo.DPO"},
                   "fpa": {"lam": lam, "guard": guard}, "data_seed": data_seed})

    runs = [run("a", 0, None, 1), run("b", 1.0, None, 1), run("c", 1.0, "future", 1), run("d", 0.5, None, 4)]
    assert [r.path.name for r in select(runs, ["DPO", "FPA-DPO (*)"])] == ["a", "b", "d"]
    assert [r.path.name for r in select(runs, ["FPA-DPO (*)"], [1, 2, 3])] == ["b"]
    assert select(runs) == runs
    labelled = [Run(path=Path("g"), status="finished", config={"objective": {"_target_": "fpa.objectives.dpo.DPO"}},
                    settings="lr=3e-5")]
    assert select(labelled, ["DPO [*lr=3e-5]"]) == labelled and select(labelled, ["DPO [lr=1e-4]"]) == []


def test_a_run_that_kept_the_default_is_labelled_with_its_config_value():
    from fpa.reporting.runs import name_settings

    def run(name, lam, lr_override):
        return Run(path=Path(name), status="finished", config={"objective": {"_target_": "fpa.objectives.dpo.DPO"},
                   "fpa": {"lam": lam}, "optimizer": {"lr": 3e-05 if lr_override is None else float(lr_override)}},
                   overrides={} if lr_override is None else {"optimizer.lr": lr_override})

    runs = [run("dpo", 0.0, None), run("fpa", 1.0, None), run("half", 0.0, "1.5e-5")]
    name_settings(runs)
    assert [r.label for r in runs] == ["DPO [lr=3e-05]", "FPA-DPO (λ=1) [lr=3e-05]", "DPO [lr=1.5e-5]"]
