"""The CPU form of docs/distributed.md, end to end through the command line: 2 processes (gloo) started
by Lightning's own launcher (it re-executes the command for rank 1), from the base model through the
SFT warm start (its accuracy checks), generation, training with the in-training eval callback, the
sharded/gathered save and the final evaluation, with ``trainer=fsdp`` and ``trainer=ddp``.

``GENERATE`` widens the smoke trajectory set: with 2 processes the smoke reference's 16×4 samples gave
only 3 preference pairs, fewer than one global batch (data.batch_size=4), and the train stage refused
to start (a correct refusal, not a fault of the distributed path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATE = ["generate.n_problems=40", "generate.k=8"]


@pytest.mark.parametrize("trainer", ["fsdp", "ddp"])
def test_two_process_cli_end_to_end(trainer: str, tmp_path: Path) -> None:
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    cmd = [sys.executable, "-m", "fpa.cli.train", "experiment=smoke", "logger=csv", f"trainer={trainer}",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
           f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache}", *GENERATE]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    results = json.loads((run_dir / "results.json").read_text())
    for model in ("reference", "policy"):
        assert 0.0 <= results[model]["pass@1"] <= 1.0
    assert (run_dir / "policy" / "config.json").exists()
    assert (run_dir / "eval_samples" / "step-2" / "results.json").exists()  # the in-training eval ran
    sft = next((cache / "sft").glob("*/sft_report.json"))
    assert json.loads(sft.read_text())["history"], "the warm start's accuracy checks ran"
    assert not list((cache / "sft").glob("*.partial")) and not list((cache / "sft").glob("*.lock"))
