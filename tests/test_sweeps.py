"""Sweeps compose, a smoke-sized multirun runs, and fpa-report turns it into a table and plots."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fpa.cli.report import report

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_sweep_composes(sweep):
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        cfg = compose(config_name=sweep.stem, overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]"],
                      return_hydra_config=True)
    assert cfg.sweep == sweep.stem
    assert cfg.hydra.sweeper.params, "a sweep defines what it varies"
    from fpa.config.parts import train_parts

    train_parts(cfg)  # every node of the sweep's base config builds


def test_smoke_sweep_and_report(tmp_path):
    sweep_dir = tmp_path / "multirun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "fpa.cli.train", "-m", "-cd", str(ROOT / "sweeps"), "-cn", "smoke",
         f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert len(runs) == 4 and all((r / "results.json").exists() for r in runs)
    table, plots = report([str(sweep_dir)], tmp_path / "report")
    for method in ("| DPO |", "| FPA-DPO (λ=1) |", "| KTO |", "| FPA-KTO (λ=1) |", "| reference |"):
        assert method in table
    assert {p.name for p in plots} >= {"pass1_vs_step.png", "logps_vs_step.png", "coef_vs_step.png"}
    assert (tmp_path / "report" / "report.csv").exists()


def test_command_line_overrides_name_another_sweep_directory(monkeypatch):
    """Hydra resolves hydra.sweep.dir before applying the command line's overrides; the key must still see them."""
    from fpa.config.resolvers import register_resolvers

    register_resolvers()

    def sweep_dir(*argv: str) -> str:
        monkeypatch.setattr(sys, "argv", ["fpa-train", "-m", "-cd", "sweeps", "-cn", "regime", *argv])
        with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
            cfg = compose(config_name="regime", overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]", *argv],
                          return_hydra_config=True)
        return str(cfg.hydra.sweep.dir)

    base = sweep_dir()
    assert sweep_dir("train.max_steps=600") != sweep_dir("train.max_steps=200") != base
    assert sweep_dir("train.max_steps=600", "seed=1") == sweep_dir("seed=1", "train.max_steps=600")  # order-free
    assert sweep_dir() == base  # the same command: the same directory (a sweep resumes)
