"""What every stage builds from the config: the task, the prompt format, Lightning trainers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fpa.prompting import PromptFormat


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def make_task(cfg: DictConfig):
    return instantiate(cfg.task)


def make_prompt(cfg: DictConfig) -> PromptFormat:
    return PromptFormat(**plain(cfg.model.prompt))


def make_trainer(cfg: DictConfig, max_steps: int, default_root_dir: Path, loggers: list | bool = False,
                 callbacks: list | None = None, **overrides) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` (accelerator, precision, ...) for ``max_steps`` steps."""
    kwargs = {**plain(cfg.trainer), "max_steps": max_steps, "max_epochs": -1, "logger": loggers,
              "callbacks": callbacks or [], "default_root_dir": str(default_root_dir), **overrides}
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(**kwargs)
