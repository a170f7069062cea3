"""What every stage builds from the config: the task, the prompt format, Lightning trainers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fpa.prompting import PromptFormat

# Keys of a trainer preset (conf/trainer/*.yaml) that are ours, not lightning.Trainer arguments.
TRAINER_EXTRAS = {"gradient_checkpointing": False}


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def make_task(cfg: DictConfig):
    return instantiate(cfg.task)


def make_prompt(cfg: DictConfig) -> PromptFormat:
    return PromptFormat(**plain(cfg.model.prompt))


def trainer_option(cfg: DictConfig, key: str) -> Any:
    """A trainer preset's own (non-Trainer) option, e.g. ``gradient_checkpointing``."""
    return cfg.trainer.get(key, TRAINER_EXTRAS[key])


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` as lightning.Trainer arguments: our extras dropped, a ``strategy`` node instantiated."""
    kwargs = {k: v for k, v in plain(cfg.trainer).items() if k not in TRAINER_EXTRAS}
    strategy = kwargs.get("strategy")
    if isinstance(strategy, dict) and "_target_" in strategy:
        kwargs["strategy"] = instantiate(strategy)
    return kwargs


def make_trainer(cfg: DictConfig, max_steps: int, default_root_dir: Path, loggers: list | bool = False,
                 callbacks: list | None = None, **overrides) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` (accelerator, precision, ...) for ``max_steps`` steps."""
    kwargs = {**trainer_kwargs(cfg), "max_steps": max_steps, "max_epochs": -1, "logger": loggers,
              "callbacks": callbacks or [], "default_root_dir": str(default_root_dir), **overrides}
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(**kwargs)


def precision_is_mixed(cfg: DictConfig) -> bool:
    return "mixed" in str(cfg.trainer.get("precision", "32-true"))
