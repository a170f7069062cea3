"""Where the shared Hydra configs live: $FPA_CONF_DIR, else the repository's top-level conf/."""

from __future__ import annotations

import os
from pathlib import Path


def conf_dir() -> str:
    path = Path(os.environ.get("FPA_CONF_DIR") or Path(__file__).resolve().parents[3] / "conf")
    if not (path / "train.yaml").exists():
        raise SystemExit(f"fpa: no Hydra configs at {path}; install the repo editable (pip install -e .) "
                         "or set FPA_CONF_DIR to its conf/ directory")
    return str(path)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    # ${short:fpa.objectives.dpo.DPO} -> DPO: readable names for W&B groups and tags.
    if not OmegaConf.has_resolver("short"):
        OmegaConf.register_new_resolver("short", lambda target: str(target).rsplit(".", 1)[-1])


_register_resolvers()
