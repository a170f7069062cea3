"""Discover training runs on disk and read what they wrote: config, status, results, metric curves.

Works from local files only (no W&B account): Hydra's ``.hydra/config.yaml``, the run's
``status.json`` and ``results.json``, and the CSV logger's ``metrics.csv``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fpa.reporting.labels import method_label, objective_name
from fpa.run_status import state as run_state


@dataclass
class Run:
    path: Path
    status: str  # finished | failed | running | interrupted (fpa.run_status.state)
    config: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] | None = None
    error: str | None = None
    metrics: pd.DataFrame | None = None
    choices: dict[str, str] = field(default_factory=dict)  # Hydra's config-group choices (objective=rft)

    @property
    def objective(self) -> str:
        return objective_name(self.config.get("objective", {}).get("_target_", "?"), self.choices.get("objective"))

    @property
    def lam(self) -> float:
        return float(self.config.get("fpa", {}).get("lam", 0.0))

    @property
    def apply_to(self) -> str:
        return self.config.get("fpa", {}).get("apply_to", "both")

    @property
    def guard(self) -> str | None:
        return self.config.get("fpa", {}).get("guard")

    @property
    def data_seed(self) -> int:
        return int(self.config.get("data_seed", 0))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def label(self) -> str:
        return method_label(self.objective, self.lam, self.apply_to, self.guard)


def _is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").exists() or (path / "status.json").exists() \
        or (path / "results.json").exists()


def find_run_dirs(roots: list[str | Path]) -> list[Path]:
    """Run directories at or below each root (a multirun directory or single runs)."""
    found: list[Path] = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"fpa-report: no such directory: {root}")
        if _is_run_dir(root):
            found.append(root)
            continue
        found += sorted({p.parent.parent for p in root.glob("**/.hydra/config.yaml")} |
                        {p.parent for p in root.glob("**/status.json")}, key=_natural)
    return found


def _natural(path: Path) -> list:
    """Sort key putting multirun job 2 before job 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def read_metrics(path: Path) -> pd.DataFrame | None:
    files = sorted(path.glob("csv/*/metrics.csv"))
    if not files:
        return None
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def load_run(path: Path) -> Run:
    config_file = path / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    hydra_file = path / ".hydra" / "hydra.yaml"
    hydra_cfg = yaml.safe_load(hydra_file.read_text()) if hydra_file.exists() else {}
    choices = ((hydra_cfg or {}).get("hydra", {}).get("runtime", {}) or {}).get("choices", {}) or {}
    status_file, results_file = path / "status.json", path / "results.json"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    results = json.loads(results_file.read_text()) if results_file.exists() else None
    if results is not None and status.get("status", "finished") == "finished":
        state = "finished"
    else:  # a "running" status is judged by its host, pid and heartbeat: alive, or killed
        state = run_state(status)
        state = "interrupted" if state in ("new", "finished") else state  # no status, or finished without results
    return Run(path=path, status=state, config=config or status.get("config", {}), results=results,
               error=status.get("error"), metrics=read_metrics(path), choices=choices)


def load_runs(roots: list[str | Path]) -> list[Run]:
    return [load_run(p) for p in find_run_dirs(roots)]
