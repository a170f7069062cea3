"""The CPU form of docs/distributed.md, end to end through the command line: 2 processes (gloo) started
by Lightning's own launcher (it re-executes the command for rank 1), from the base model through the
SFT warm start (its accuracy checks), generation, training with the in-training eval callback, the
sharded/gathered save and the final evaluation, with ``trainer=fsdp`` and ``trainer=ddp``.

The 2-process warm start must learn like the 1-process one: ``sft.batch_size`` is the global batch,
split over the ranks, so both step through the same batches (same epochs per step, the same first
logged loss up to float rounding) and end within one dev problem of each other. Before, Lightning's
distributed sampler gave each rank ``sft.batch_size`` of its own (twice the batch, half the steps per
epoch) and the smoke reference's samples gave too few preference pairs for one batch.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVAL_PROBLEMS = 6  # sft.eval_problems of experiment=smoke: accuracy comes in steps of 1/6


def _train(tmp: Path, trainer: list[str]) -> tuple[Path, Path]:
    run_dir, cache = tmp / "run", tmp / "cache"
    cmd = [sys.executable, "-m", "fpa.cli.train", "experiment=smoke", "logger=csv", *trainer,
           f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return run_dir, cache


def _warm_start(cache: Path) -> tuple[dict, list[dict]]:
    """The warm start's sft_report.json and its logged training rows (step, epoch, loss)."""
    report = next((cache / "sft").glob("*/sft_report.json"))
    with open(next(report.parent.glob("logs/*/metrics.csv"))) as f:
        rows = [{"step": int(r["step"]), "epoch": int(r["epoch"]), "loss": float(r["train/loss"])}
                for r in csv.DictReader(f) if r.get("train/loss")]
    return json.loads(report.read_text()), rows


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[dict, list[dict]]:
    _, cache = _train(tmp_path_factory.mktemp("cpu"), ["trainer=cpu"])
    return _warm_start(cache)


@pytest.mark.parametrize("trainer", ["fsdp", "ddp"])
def test_two_process_cli_end_to_end(trainer: str, tmp_path: Path, one_process) -> None:
    run_dir, cache = _train(tmp_path, [f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=2",
                                       "trainer.precision=32-true"])
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    results = json.loads((run_dir / "results.json").read_text())
    for model in ("reference", "policy"):
        assert 0.0 <= results[model]["pass@1"] <= 1.0
    assert (run_dir / "policy" / "config.json").exists()
    assert (run_dir / "eval_samples" / "step-2" / "results.json").exists()  # the in-training eval ran
    report, rows = _warm_start(cache)
    assert report["history"], "the warm start's accuracy checks ran"
    assert not list((cache / "sft").glob("*.partial")) and not list((cache / "sft").glob("*.lock"))

    # The 2-process warm start learns like the 1-process one.
    ref_report, ref_rows = one_process
    assert [(r["step"], r["epoch"]) for r in rows] == [(r["step"], r["epoch"]) for r in ref_rows]
    assert rows[0]["loss"] == pytest.approx(ref_rows[0]["loss"], rel=0.01)  # same batches, before chaos sets in
    assert abs(report["dev_accuracy"] - ref_report["dev_accuracy"]) <= 1 / EVAL_PROBLEMS + 1e-9
