"""OmegaConf resolvers the shipped YAML uses; every entry point registers them before composing."""

from __future__ import annotations

from omegaconf import OmegaConf


def short_name(target: str) -> str:
    """``${short:fpa.objectives.dpo.DPO}`` -> ``DPO``: readable names for W&B groups and tags."""
    return str(target).rsplit(".", 1)[-1]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("short"):
        OmegaConf.register_new_resolver("short", short_name)
