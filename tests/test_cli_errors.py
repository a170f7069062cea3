"""Expected failures end the real command line with one line naming the file / key / record, exit code 1."""

from __future__ import annotations

import json

import pytest

from cli_helpers import FAST, fpa
from fpa.testing import build_model, write_trajectories


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    traj = write_trajectories(root / "traj.jsonl", n_problems=4)
    right = root / "all_right.jsonl"  # every sample right: no preference pairs
    right.write_text("".join(json.dumps({**json.loads(line), "reward": 1.0}) + "\n"
                             for line in traj.read_text().splitlines()))
    return {"model": build_model(root / "model"), "traj": traj, "all_right": right, "cache": root / "cache"}


def _train(inputs, tmp_path, *args, traj="traj", env=None):
    return fpa("train", *FAST, f"model.reference={inputs['model']}", f"data.trajectories={inputs[traj]}",
               f"paths.cache_dir={inputs['cache']}", *args, cwd=tmp_path, env=env)


def _one_line(proc, prog="fpa-train"):
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()  # before it: Lightning's info lines and progress bars, if any
    assert lines and lines[-1].startswith(f"{prog}: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and sum(line.startswith(f"{prog}: ") for line in lines) == 1
    return lines[-1]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short"], ids=["empty", "truncated"])
def test_a_bad_last_ckpt_is_one_line_naming_it_and_train_resume_never(inputs, tmp_path, content):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(content)
    line = _one_line(_train(inputs, tmp_path, f"hydra.run.dir={run_dir}"))
    assert "last.ckpt" in line and "train.resume=never" in line and "mmap" not in line


def test_no_training_examples_is_one_line(inputs, tmp_path):
    line = _one_line(_train(inputs, tmp_path, traj="all_right"))
    assert "no training examples of kind 'pairs'" in line


def test_a_config_error_is_one_line_and_full_error_keeps_the_traceback(inputs, tmp_path):
    assert "optimizer.lr" in _one_line(_train(inputs, tmp_path, "optimizer.lr=0"))
    full = _train(inputs, tmp_path, "optimizer.lr=0", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr and "ConfigError" in full.stderr


def test_generate_out_dir_that_is_a_file_is_one_line(inputs, tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a directory")
    line = _one_line(fpa("generate", "experiment=smoke", f"model_path={inputs['model']}", f"out_dir={out}",
                         f"paths.cache_dir={inputs['cache']}", "generate.n_problems=2", cwd=tmp_path),
                     "fpa-generate")
    assert "out_dir" in line and str(out) in line


def test_a_bad_problems_file_is_one_line_naming_the_record(inputs, tmp_path):
    bad = tmp_path / "problems.jsonl"
    bad.write_text('{"question": "1+1", "answer": "2"}\n{"question": 3\n')
    line = _one_line(fpa("generate", "logger=csv", "task=gsm8k", "data.skip_invalid=false", f"task.path={bad}",
                         f"model_path={inputs['model']}", f"out_dir={tmp_path / 'out'}",
                         f"paths.cache_dir={inputs['cache']}", "generate.n_problems=1", cwd=tmp_path),
                     "fpa-generate")
    assert str(bad) in line and "line 2" in line
