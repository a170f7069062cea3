"""Rerunning the same command: a finished run is not retrained, a killed one resumes, a live one is refused;
a rerun sweep skips its finished points (run and sweep directories are named from the config)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from cli_helpers import FAST, fpa
from fpa.testing import build_model, write_trajectories


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerun")
    return [f"model.reference={build_model(root / 'model')}",
            f"data.trajectories={write_trajectories(root / 'traj.jsonl', n_problems=4)}",
            f"paths.cache_dir={root / 'cache'}", "callbacks.checkpoint.every_n_train_steps=1"]


def _status(run_dir, **changes):
    data = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**data, **changes}))


def test_the_same_command_resumes_its_run(inputs, tmp_path):
    first = fpa("train", *FAST, *inputs, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert json.loads((run / "status.json").read_text())["status"] == "finished"

    again = fpa("train", *FAST, *inputs, cwd=tmp_path)
    assert again.returncode == 0 and f"{run} already finished" in again.stdout
    assert list((tmp_path / "outputs" / "runs").iterdir()) == [run]  # same directory, not retrained

    # Killed mid-way (SIGKILL: status.json still says running, its process is gone): the rerun resumes.
    (run / "results.json").unlink()
    _status(run, status="running", pid=2 ** 22 + 7, heartbeat=time.time() - 3600)
    resumed = fpa("train", *FAST, *inputs, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Restored all states from the checkpoint at {run}/checkpoints/last.ckpt" in resumed.stdout + resumed.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "finished"

    # A live run (this test's process, on this host) is never attached to.
    _status(run, status="running", pid=os.getpid(), host=socket.gethostname(), started=time.time())
    live = fpa("train", *FAST, *inputs, cwd=tmp_path)
    assert live.returncode == 1
    last = live.stderr.strip().splitlines()[-1]
    assert last.startswith("fpa-train: ") and f"pid {os.getpid()}" in last and "still alive" in last


def test_a_rerun_sweep_skips_its_finished_points(inputs, tmp_path):
    args = ["-m", *FAST, *inputs, "fpa.lam=0,1.0"]
    first = fpa("train", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    points = sorted((tmp_path / "outputs" / "multirun" / "adhoc").glob("*/[0-9]"))
    assert [p.name for p in points] == ["0", "1"] and len({p.parent for p in points}) == 1
    again = fpa("train", *args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("already finished") == 2
    assert sorted((tmp_path / "outputs" / "multirun" / "adhoc").glob("*/[0-9]")) == points
