"""Running the real entry points in a subprocess, on inputs that skip prepare / sft / generate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Training at toy size from a given reference and trajectory file: a few seconds per command.
FAST = ["experiment=smoke", "logger=csv", "train.max_steps=2", "callbacks.eval.every_n_steps=0",
        "benchmark.n_problems=2"]


def fpa(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m fpa.cli.<module> args`` in ``cwd``; returns the finished process (text output)."""
    full = {**os.environ, "PYTHONPATH": os.environ.get("FPA_TEST_SRC", str(SRC)), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            **(env or {})}
    full.pop("HYDRA_FULL_ERROR", None) if "HYDRA_FULL_ERROR" not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", f"fpa.cli.{module}", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)
