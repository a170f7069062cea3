"""The hierarchical bootstrap (data seeds → training seeds → problems) and the CI table of fpa-report,
on synthetic runs whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from fpa.reporting.bootstrap import interval, paired_cells, point_estimate, replicates


def test_point_estimate_weighs_each_level_equally():
    cells = {0: {0: [1.0, 0.0], 1: [1.0, 1.0, 1.0, 1.0]}, 1: {0: [0.0, 0.0, 0.0]}}
    # data seed 0: mean(0.5, 1.0) = 0.75; data seed 1: 0.0 → 0.375 (not the pooled 5/9)
    assert point_estimate(cells) == pytest.approx(0.375)


def test_a_constant_paired_shift_has_a_zero_width_interval_that_excludes_zero():
    rng = np.random.default_rng(0)
    base = {ds: {ts: {f"p{i}": float(x) for i, x in enumerate(rng.random(40))} for ts in range(2)} for ds in range(4)}
    method = {ds: {ts: {p: v + 0.1 for p, v in runs.items()} for ts, runs in r.items()} for ds, r in base.items()}
    out = interval(paired_cells(method, base), n_boot=300)
    assert out["mean"] == pytest.approx(0.1) and out["ci_low"] == pytest.approx(0.1)
    assert out["ci_high"] == pytest.approx(0.1) and out["excludes_zero"] and out["n_runs"] == 8


def test_one_data_seed_and_one_run_is_the_problem_bootstrap():
    """A single cell: the interval is the ordinary bootstrap over problems (≈ mean ± 1.96·sd/√n)."""
    rng = np.random.default_rng(1)
    v = (rng.random(2000) < 0.4).astype(float)
    out = interval({0: {0: v}}, n_boot=2000, seed=2)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v))
    assert (out["ci_high"] - out["ci_low"]) / 2 == pytest.approx(half, rel=0.1)
    assert out["se"] == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)), rel=0.1)


def test_without_problem_noise_the_interval_is_the_bootstrap_over_data_seeds():
    means = np.array([0.30, 0.36, 0.41, 0.33, 0.39, 0.35])
    cells = {ds: {0: np.full(50, m)} for ds, m in enumerate(means)}
    boot = replicates(cells, n_boot=3000, seed=4)
    rng = np.random.default_rng(5)
    direct = means[rng.integers(0, len(means), size=(3000, len(means)))].mean(1)
    assert np.quantile(boot, [0.025, 0.975]) == pytest.approx(np.quantile(direct, [0.025, 0.975]), abs=0.004)


def _simulate(rng, effect, n_ds=6, n_ts=2, n_problems=40, sd_ds=0.03, sd_ts=0.01, sd_problem=0.15):
    """Base and method per-problem scores: method − base = effect + seed-level and problem-level noise."""
    base, method = {}, {}
    for ds in range(n_ds):
        a = rng.normal(0, sd_ds)
        base[ds], method[ds] = {}, {}
        for ts in range(n_ts):
            b = rng.normal(0, sd_ts)
            difficulty = rng.random(n_problems)
            base[ds][ts] = {f"p{i}": float(x) for i, x in enumerate(difficulty)}
            noise = rng.normal(0, sd_problem, n_problems)
            method[ds][ts] = {f"p{i}": float(x + effect + a + b + e)
                              for i, (x, e) in enumerate(zip(difficulty, noise))}
    return method, base


def test_paired_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered, flat_covered, n_sim, effect = 0, 0, 50, 0.02
    for sim in range(n_sim):
        method, base = _simulate(rng, effect)
        cells = paired_cells(method, base)
        out = interval(cells, n_boot=250, seed=sim)
        covered += out["ci_low"] <= effect <= out["ci_high"]
        # the same data as one flat sample of problems, ignoring the seeds: far too narrow
        flat = {0: {0: np.concatenate([v for r in cells.values() for v in r.values()])}}
        f = interval(flat, n_boot=250, seed=sim)
        flat_covered += f["ci_low"] <= effect <= f["ci_high"]
    assert covered / n_sim >= 0.85, covered
    assert flat_covered / n_sim < 0.8, flat_covered  # the seed level matters: the test can tell


def test_large_effects_exclude_zero_and_null_effects_cover_it():
    rng = np.random.default_rng(11)
    method, base = _simulate(rng, effect=0.15)
    assert interval(paired_cells(method, base), n_boot=500)["excludes_zero"]
    method, base = _simulate(rng, effect=0.0, sd_ds=0.0, sd_ts=0.0)
    out = interval(paired_cells(method, base), n_boot=500)
    assert out["ci_low"] < 0 < out["ci_high"] and not out["excludes_zero"]


def test_pairing_needs_the_same_problems_and_skips_unpaired_runs():
    a = {0: {0: {"p1": 1.0, "p2": 0.0}, 1: {"p1": 1.0, "p2": 1.0}}}
    b = {0: {0: {"p1": 0.0, "p2": 0.0}}}
    assert {ds: {ts: v.tolist() for ts, v in r.items()} for ds, r in paired_cells(a, b).items()} == {0: {0: [1.0, 0.0]}}
    with pytest.raises(ValueError, match="data seed 0, training seed 0: the two evaluations cover different"):
        paired_cells({0: {0: {"p1": 1.0}}}, {0: {0: {"p3": 1.0}}})
    with pytest.raises(ValueError, match="no cells"):
        interval({})


# -- fpa-report on synthetic run directories ------------------------------------------------------------

def _samples(path, scores, k=4):
    """A samples file with k samples per problem, round(score·k) of them correct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"problem_id": p, "correct": j < round(s * k)} for p, s in scores.items() for j in range(k)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(root, name, objective, lam, ds, ts, scores, ref_scores, guard=None, apply_to="both"):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"objective": {"_target_": f"fpa.objectives.x.{objective}"},
         "fpa": {"lam": lam, "apply_to": apply_to, "guard": guard}, "seed": ts, "data_seed": ds}))
    (d / "status.json").write_text(json.dumps({"status": "finished"}))
    ref_dir = root / f"ref-{ds}"
    _samples(ref_dir / "samples" / "arith.jsonl", ref_scores)
    _samples(d / "eval" / "samples" / "arith.jsonl", scores)
    suite = {"benchmarks": {"arith": {"samples_file": "samples/arith.jsonl"}}}
    (d / "results.json").write_text(json.dumps({
        "reference": {"benchmark": "arith", "pass@1": float(np.mean(list(ref_scores.values()))),
                      "model": f"cache/sft/{ds}", "dir": str(ref_dir), "suite": suite},
        "policy": {"benchmark": "arith", "pass@1": float(np.mean(list(scores.values()))), "suite": suite}}))


def test_report_ci_table_on_synthetic_runs(tmp_path):
    from fpa.cli.report import report
    from fpa.reporting.methods import ci_rows
    from fpa.reporting.runs import load_runs

    rng = np.random.default_rng(3)
    root = tmp_path / "multirun"
    n = 0
    truth = {}
    for ds in range(3):
        ref = {f"p{i}": float(rng.integers(0, 5) / 4) for i in range(60)}
        for ts in range(2):
            dpo = {p: min(1.0, v + 0.25 * (i % 2)) for i, (p, v) in enumerate(ref.items())}
            fpa = {p: min(1.0, v + 0.25) if v < 1 else v for p, v in dpo.items()}  # never worse, often better
            guard = dict(fpa)  # the guard changes nothing here: difference exactly 0
            for obj, lam, g, s in (("DPO", 0.0, None, dpo), ("DPO", 1.0, None, fpa), ("DPO", 1.0, "future", guard)):
                _run(root, str(n), obj, lam, ds, ts, s, ref, guard=g)
                n += 1
            truth.setdefault("fpa-dpo", []).append(np.mean([fpa[p] - dpo[p] for p in ref]))
    rows = {r["method"]: r for r in ci_rows(load_runs([root]), n_boot=400)}
    assert set(rows) == {"reference", "DPO", "FPA-DPO (λ=1)", "FPA-DPO (λ=1) + guard"}
    assert rows["reference"]["n_data_seeds"] == 3 and rows["reference"]["n_runs"] == 3  # one per data seed
    assert rows["DPO"]["n_runs"] == 6 and rows["DPO"]["n_problems"] == 60 and "diff" not in rows["DPO"]
    fpa = rows["FPA-DPO (λ=1)"]
    assert fpa["base"] == "DPO" and fpa["diff"] == pytest.approx(np.mean(truth["fpa-dpo"]))
    assert fpa["diff_excludes_zero"] and fpa["diff_ci_low"] > 0 and fpa["diff_n_runs"] == 6
    guard = rows["FPA-DPO (λ=1) + guard"]
    assert guard["base"] == "FPA-DPO (λ=1)" and guard["diff"] == 0 and not guard["diff_excludes_zero"]
    assert rows["DPO"]["ci_low"] < rows["DPO"]["mean"] < rows["DPO"]["ci_high"]

    from fpa.reporting.methods import control_rows

    versus = {r["method"]: r for r in control_rows(load_runs([root]), "DPO", n_boot=400)}
    assert versus["FPA-DPO (λ=1)"]["diff"] == pytest.approx(np.mean(truth["fpa-dpo"]))  # the same pairs as its base
    assert versus["reference"]["diff"] < 0 and versus["reference"]["n_runs"] == 6  # paired with every DPO run
    assert control_rows(load_runs([root]), "RFT") == []

    table, plots = report([str(root)], tmp_path / "out", control="DPO")
    assert "Every method against DPO" in table and "| FPA-DPO (λ=1) + guard |" in table.split("against DPO")[1]
    table, plots = report([str(root)], tmp_path / "out", control=["DPO", "FPA-DPO (λ=1)"])  # two controls
    assert "against DPO" in table and "| DPO | " in table.split("against FPA-DPO (λ=1)")[1]
    table, plots = report([str(root)], tmp_path / "out")
    assert "| FPA-DPO (λ=1) + guard | 3 | 6 | 60 |" in table
    assert "pass1_bands.png" not in {p.name for p in plots}  # no curves logged in these runs
    assert (tmp_path / "out" / "report_ci.csv").exists()


def test_curve_bands_are_the_mean_of_means_with_a_bootstrap_interval(tmp_path):
    import pandas as pd

    from fpa.reporting.plots import band_curve
    from fpa.reporting.runs import Run

    def run(ds, ts, values):
        return Run(path=tmp_path, status="finished", config={"data_seed": ds, "seed": ts},
                   metrics=pd.DataFrame({"step": [0, 10], "eval/arith/pass@1": values}))

    runs = [run(0, 0, [0.4, 0.5]), run(0, 1, [0.4, 0.7]), run(1, 0, [0.3, 0.3])]
    band = band_curve(runs, "eval/arith/pass@1", n_boot=400)
    assert band.loc[10, "mean"] == pytest.approx((0.6 + 0.3) / 2) and band.loc[0, "mean"] == pytest.approx(0.35)
    assert band.loc[10, "low"] >= 0.3 - 1e-12 and band.loc[10, "high"] <= 0.7 + 1e-12
    assert band.loc[10, "low"] < band.loc[10, "mean"] < band.loc[10, "high"] and band.loc[10, "n_runs"] == 3


def test_pass1_against_lambda_pairs_each_lambda_with_its_base(tmp_path):
    from fpa.cli.report import report
    from fpa.reporting.lambda_curve import lambda_points, lambda_table
    from fpa.reporting.runs import load_runs

    root = tmp_path / "multirun"
    ref = {f"p{i}": (i % 5) / 4 for i in range(40)}
    gains = {(0.0, "both"): 0.0, (0.5, "both"): 0.25, (2.0, "both"): 0.5, (1.0, "rejected"): 0.75}
    n = 0
    for ds in range(2):
        for (lam, side), gain in gains.items():  # DPO at 0.25 below the reference, FPA lifts every problem
            scores = {p: min(1.0, max(0.0, v - 0.25) + gain) for p, v in ref.items()}
            _run(root, str(n), "DPO", lam, ds, 0, scores, ref, apply_to=side)
            n += 1
        _run(root, str(n), "DPO", 2.0, ds, 0, ref, ref, guard="future")  # guarded: not a point of the curve
        n += 1
    points = lambda_points(load_runs([root]), n_boot=200)
    assert len(points) == 4 and set(points.family) == {"DPO"}
    for (lam, side), gain in gains.items():
        row = points[(points.lam == lam) & (points.side == side)].iloc[0]
        expect = np.mean([min(1.0, max(0.0, v - 0.25) + gain) for v in ref.values()])
        assert row["mean"] == pytest.approx(expect) and row.n_runs == 2
        base = np.mean([max(0.0, v - 0.25) for v in ref.values()])
        assert (np.isnan(row["diff"]) if lam == 0 else row["diff"] == pytest.approx(expect - base))
    assert "| DPO | both | 2 | 2 |" in lambda_table(points) and "| DPO | rejected | 1 | 2 |" in lambda_table(points)
    assert lambda_table(points[points.lam != 2.0]) == ""  # two λ values on side both: no curve

    table, plots = report([str(root)], tmp_path / "out")
    assert "against FPA's λ" in table and (tmp_path / "out" / "lambda.csv").exists()
    assert "pass1_vs_lambda.png" in {p.name for p in plots}
