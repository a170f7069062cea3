"""The ``trainer`` node: Lightning Trainer arguments, one fresh Trainer per stage that trains."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L


@dataclass
class TrainerFactory:
    """Builds ``lightning.Trainer`` from the ``trainer`` node (``_target_: lightning.pytorch.Trainer``).

    The node is an open mapping of Trainer arguments (Lightning checks them); a nested
    ``strategy`` node (``_target_``) is instantiated anew for every Trainer, since a strategy
    belongs to one Trainer.
    """

    node: dict[str, Any]

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.node.items() if k != "_partial_"}

    @property
    def precision(self) -> str:
        return str(self.node.get("precision", "32-true"))

    @property
    def precision_is_mixed(self) -> bool:
        return "mixed" in self.precision

    def __call__(self, max_steps: int, default_root_dir: str | Path, loggers: list | bool = False,
                 callbacks: list | None = None, **overrides: Any) -> L.Trainer:
        from hydra.utils import instantiate

        node = {k: v for k, v in copy.deepcopy(self.node).items() if k != "_partial_"}
        kwargs = {"max_steps": max_steps, "max_epochs": -1, "logger": loggers, "callbacks": callbacks or [],
                  "default_root_dir": str(default_root_dir), "enable_checkpointing": False, **overrides}
        return instantiate(node, **kwargs)
