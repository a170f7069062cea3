"""The faults suite's settings and helpers (the session fixture ``ref`` is in this folder's conftest).

A module of its own name, not conftest: test files import it, and ``from conftest import`` would
find whichever conftest was imported last (tests/ and tests/faults/ each have one).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cli_helpers
from cli_helpers import fpa  # noqa: E402

SMALL = ["experiment=smoke", "logger=csv", "callbacks.eval.every_n_steps=0"]
# Several shards, generated slowly enough (1 sample per forward) that a kill lands between shards.
GEN = ["generate.n_problems=40", "generate.shard_size=2", "generate.batch_size=1", "progress=false"]
# Long enough that a kill after the first checkpoint lands mid-run; a checkpoint every step.
STEPS = 60
TRAIN = [f"train.max_steps={STEPS}", "callbacks.checkpoint.every_n_train_steps=1"]


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def one_line(proc, prog="fpa-train"):
    """Exit 1 and the last non-empty stderr line is the one ``<prog>: ...`` message, no traceback."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"{prog}: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and sum(line.startswith(f"{prog}: ") for line in lines) == 1
    return lines[-1]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shard_sums(root: Path) -> dict[str, tuple[str, int]]:
    """Shard index -> (sha256, records) from the manifest; and every recorded file must match it."""
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["complete"]
    sums = {i: (e["sha256"], e["n_records"]) for i, e in manifest["finished"].items()}
    for e in manifest["finished"].values():
        assert sha(root / e["file"]) == e["sha256"]
    assert sorted(p.name for p in root.glob("*.parquet")) == sorted(e["file"] for e in manifest["finished"].values())
    return sums


def run_dir(cwd: Path) -> Path:
    runs = list((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


class Ref:
    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"
        self.gen = root / "gen-ref"

    def generate(self, out: Path, *extra: str, cwd: Path | None = None):
        return fpa("generate", *SMALL, f"paths.cache_dir={self.cache}", *GEN, f"out_dir={out}", *extra,
                   cwd=cwd or out.parent)

    def train_args(self, *extra: str, cache: Path | None = None) -> list[str]:
        return [*SMALL, f"paths.cache_dir={cache or self.cache}", *TRAIN, *extra]

    def train(self, cwd: Path, *extra: str, cache: Path | None = None):
        cwd.mkdir(parents=True, exist_ok=True)
        return fpa("train", *self.train_args(*extra, cache=cache), cwd=cwd)

    def copy_cache(self, to: Path) -> Path:
        shutil.copytree(self.cache, to, ignore=shutil.ignore_patterns("*.lock"))
        return to
