"""The paired bootstrap against answers known in closed form."""

import json
import math

import numpy as np
import pytest

from fpa.reporting.paired import paired_difference, per_problem


def test_constant_shift_has_a_zero_width_interval():
    ref = {f"p{i}": (i % 4) / 4 for i in range(50)}
    pol = {k: v + 0.25 for k, v in ref.items()}
    out = paired_difference(pol, ref, n_boot=500)
    assert out["difference"] == pytest.approx(0.25) and out["ci_low"] == pytest.approx(0.25)
    assert out["ci_high"] == pytest.approx(0.25) and out["excludes_zero"] and out["se_difference"] == pytest.approx(0)


def test_interval_matches_the_normal_approximation_and_covers_the_truth():
    rng = np.random.default_rng(1)
    n = 4000
    ref = {f"p{i}": float(x) for i, x in enumerate(rng.random(n) < 0.5)}
    pol = {f"p{i}": float(x) for i, x in enumerate(rng.random(n) < 0.6)}
    out = paired_difference(pol, ref, n_boot=4000, seed=3)
    d = np.array([pol[k] - ref[k] for k in sorted(pol)])
    half = 1.96 * d.std(ddof=1) / math.sqrt(n)
    assert (out["ci_high"] - out["ci_low"]) / 2 == pytest.approx(half, rel=0.1)
    assert out["ci_low"] < 0.1 < out["ci_high"] and out["excludes_zero"]
    assert out["se_policy"] == pytest.approx(math.sqrt(0.24 / n), rel=0.1)


def test_pairing_cancels_shared_problem_difficulty():
    """Same per-problem difficulty for both: the paired CI is far narrower than the scores' own errors."""
    rng = np.random.default_rng(2)
    base = rng.random(300)
    ref = {f"p{i}": float(x) for i, x in enumerate(base)}
    pol = {f"p{i}": float(min(1.0, x + 0.02)) for i, x in enumerate(base)}
    out = paired_difference(pol, ref, n_boot=1000)
    assert out["ci_high"] - out["ci_low"] < out["se_policy"]


def test_samples_file_and_mismatched_problems(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text("".join(json.dumps({"problem_id": p, "correct": c}) + "\n"
                         for p, c in [("a", True), ("a", False), ("b", True), ("b", True)]))
    assert per_problem(f) == {"a": 0.5, "b": 1.0}
    with pytest.raises(ValueError, match="different problems"):
        paired_difference({"a": 1.0}, {"b": 1.0})
    (tmp_path / "bad.jsonl").write_text('{"problem_id": "a"}\n')
    with pytest.raises(ValueError, match="bad.jsonl: line 1"):
        per_problem(tmp_path / "bad.jsonl")


def test_run_difference_reads_both_evaluations_samples(tmp_path):
    from fpa.reporting.paired import run_difference

    def write(d, rows):
        (d / "samples").mkdir(parents=True)
        (d / "samples" / "arith.jsonl").write_text("".join(json.dumps({"problem_id": p, "correct": c}) + "\n"
                                                          for p, c in rows))
        return {"benchmark": "arith", "dir": str(d), "suite": {"benchmarks": {"arith": {"samples_file":
                                                                                          "samples/arith.jsonl"}}}}

    ref = write(tmp_path / "cache" / "eval", [("a", False), ("a", False), ("b", True), ("b", False)])
    pol = write(tmp_path / "run" / "eval", [("a", True), ("a", False), ("b", True), ("b", True)])
    d = run_difference({"reference": ref, "policy": pol}, tmp_path / "run", n_boot=200)
    assert d["reference"] == 0.25 and d["policy"] == 0.75 and d["difference"] == 0.5
    assert run_difference({"reference": {**ref, "dir": str(tmp_path / "gone")}, "policy": pol}, tmp_path) is None
