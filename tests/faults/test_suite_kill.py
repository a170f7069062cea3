"""kill -9 mid-way through fpa-generate and fpa-train; the same command again finishes the work exactly."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import SRC
from faults_helpers import GEN, SMALL, STEPS, TRAIN, ok, run_dir, sha, shard_sums  # noqa: F401
from fpa.data.records import load_trajectories


def popen(module: str, *args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.environ.get("FPA_TEST_SRC", str(SRC)), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", f"fpa.cli.{module}", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "finished before the kill point"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def n_finished(manifest: Path) -> int:
    try:
        return len(json.loads(manifest.read_text())["finished"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("after", [1, 5])
def test_generate_killed_after_k_shards_resumes_to_the_uninterrupted_set(ref, tmp_path, after):
    out = tmp_path / "gen"
    proc = popen("generate", *SMALL, f"paths.cache_dir={ref.cache}", *GEN, f"out_dir={out}", cwd=tmp_path)
    kill_when(proc, lambda: n_finished(out / "manifest.json") >= after)
    manifest = json.loads((out / "manifest.json").read_text())
    assert proc.returncode == -signal.SIGKILL and not manifest["complete"]
    done = {i: e["sha256"] for i, e in manifest["finished"].items()}
    assert after <= len(done) < len(ref.gen_sums)
    assert done == {i: ref.gen_sums[i][0] for i in done}  # what was finished before the kill is intact

    again = ok(ref.generate(out))
    assert "regenerating" not in again.stdout
    assert shard_sums(out) == ref.gen_sums  # exactly the uninterrupted set, shard by shard
    records, expected = load_trajectories(out)[0], load_trajectories(ref.gen)[0]
    assert records == expected
    assert len({json.dumps(r, sort_keys=True, default=str) for r in records}) == len(
        {json.dumps(r, sort_keys=True, default=str) for r in expected})  # no duplicates


def test_train_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(ref, tmp_path):
    ckpts = tmp_path / "outputs" / "runs"
    proc = popen("train", *ref.train_args(), cwd=tmp_path)
    kill_when(proc, lambda: any(ckpts.glob("*/checkpoints/last.ckpt")))
    run = run_dir(tmp_path)
    assert run.name == ref.run.name  # the directory comes from the config
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "running" and not (run / "results.json").exists()
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < STEPS

    again = ok(ref.train(tmp_path))
    log = again.stdout + again.stderr
    assert "already finished" not in log
    assert f"Restored all states from the checkpoint at {run}/checkpoints/last.ckpt" in log
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert final == STEPS
    steps = sorted({int(float(row["step"])) for f in run.glob("csv/*/metrics.csv")
                    for row in csv.DictReader(f.open()) if row.get("step")})
    assert set(range(STEPS)) <= set(steps)  # logged up to the kill, then on from where it stopped
    mine, theirs = load_file(run / "policy" / "model.safetensors"), load_file(ref.run / "policy" / "model.safetensors")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
