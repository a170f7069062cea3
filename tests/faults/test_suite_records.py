"""Malformed trajectory records given through data.trajectories=: one line naming them, or skipped and counted."""

from __future__ import annotations

import json

import pytest

from faults_helpers import ok, one_line
from fpa.testing import write_trajectories

BAD = {  # kind -> (a record line replacing line 3, the field named, what is said)
    "missing_field": (lambda r: json.dumps({k: v for k, v in r.items() if k != "reward"}), "reward", "missing"),
    "wrong_type": (lambda r: json.dumps({**r, "completion": 7}), "completion", "expected"),
    "empty_completion": (lambda r: json.dumps({**r, "completion": ""}), "completion", "empty completion"),
    "nan_reward": (lambda r: json.dumps({**r, "reward": float("nan")}), "reward", "finite"),
    "invalid_json": (lambda r: json.dumps(r)[:-5], None, "invalid JSON"),
}
FAST = ["train.max_steps=2", "benchmark.n_problems=2"]


def bad_file(tmp_path, kinds):
    good = write_trajectories(tmp_path / "good.jsonl", n_problems=4).read_text().splitlines()
    lines = list(good)
    for i, kind in enumerate(kinds):
        lines[2 + i] = BAD[kind][0](json.loads(good[2 + i]))
    path = tmp_path / "traj.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", list(BAD))
def test_a_malformed_record_is_one_line_naming_file_record_line_and_field(ref, tmp_path, kind):
    path = bad_file(tmp_path, [kind])
    line = one_line(ref.train(tmp_path, *FAST, f"data.trajectories={path}", "data.skip_invalid=false"))
    _, field, said = BAD[kind]
    assert str(path) in line and "line 3" in line and said in line, line
    assert "record" in line and (field is None or field in line), line
    assert not list((tmp_path / "outputs" / "runs").glob("*/policy"))  # nothing trained


def test_skip_invalid_trains_and_reports_how_many_were_skipped(ref, tmp_path):
    path = bad_file(tmp_path, list(BAD))
    done = ok(ref.train(tmp_path, *FAST, f"data.trajectories={path}", "data.skip_invalid=true"))
    assert f"fpa-train: skipped {len(BAD)} invalid trajectory records in {path}" in done.stdout
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert (run / "results.json").exists() and (run / "policy" / "model.safetensors").exists()
