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
    overrides: dict[str, str] = field(default_factory=dict)  # the job's command-line/sweep overrides, key -> value
    settings: str = ""  # the overrides that differ between runs of one method (load_runs), e.g. "beta=0.1"

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
    def rollout_every(self) -> int:
        return int((self.config.get("train") or {}).get("rollout_every") or 0)

    @property
    def label(self) -> str:
        return method_label(self.objective, self.lam, self.apply_to, self.guard, self.settings)


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
    overrides_file = path / ".hydra" / "overrides.yaml"
    listed = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    overrides = dict(str(o).lstrip("+~").split("=", 1) for o in listed or [] if "=" in str(o))
    return Run(path=path, status=state, config=config or status.get("config", {}), results=results,
               error=status.get("error"), metrics=read_metrics(path), choices=choices, overrides=overrides)


# Overrides that a method's label already shows, or that vary within one method by design (seeds).
LABELLED = {"objective", "regime_method", "online_method", "fpa.lam", "fpa.apply_to", "fpa.guard", "seed", "data_seed"}


def _setting(run: Run, key: str) -> str:
    """The run's value of a swept key: its override, else what its config holds there (a run that kept the default)."""
    if key in run.overrides:
        return run.overrides[key]
    node: Any = run.config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "-" if node is None or isinstance(node, dict) else f"{node:g}" if isinstance(node, float) else str(node)


def name_settings(runs: list[Run]) -> None:
    """Give runs of one objective that differ in another override (a swept hyperparameter: ``objective.beta``,
    ``train.max_steps``, ...) the differing values as ``settings``, so tables and plots keep them apart and
    an FPA run is paired with the base run at the same values."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.objective, []).append(run)
    for group in groups.values():
        keys = sorted({k for r in group for k in r.overrides if k not in LABELLED and not k.startswith("hydra")})
        varying = [k for k in keys if len({r.overrides.get(k) for r in group}) > 1]
        short = {k: k.rsplit(".", 1)[-1] for k in varying}
        if len(set(short.values())) < len(short):  # two keys with one last name: say them in full
            short = {k: k for k in varying}
        for run in group:
            online = [f"rollout_every={run.rollout_every}"] if run.rollout_every else []  # semi-online / online
            run.settings = ", ".join(online + [f"{short[k]}={_setting(run, k)}" for k in varying])


def load_runs(roots: list[str | Path]) -> list[Run]:
    runs = [load_run(p) for p in find_run_dirs(roots)]
    name_settings(runs)
    return runs
