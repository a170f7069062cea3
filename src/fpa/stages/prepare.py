"""Stage 0: the base model — a hub id / local path as given, or the embedded tiny model built once."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fpa.models.tiny import build_tiny_model
from fpa.stages.cache import cached_stage


def base_model(cfg: DictConfig) -> tuple[str, dict]:
    """(path or hub id, cache identity) of the model every later stage starts from."""
    if cfg.model.name_or_path:
        return str(cfg.model.name_or_path), {"name_or_path": str(cfg.model.name_or_path)}
    build = OmegaConf.to_container(cfg.model.build, resolve=True)
    ident = {"tiny": build, "seed": cfg.data_seed}
    path, _ = cached_stage(cfg.paths.cache_dir, "model", ident,
                           lambda d: build_tiny_model(Path(d), seed=cfg.data_seed, **build))
    return str(path), ident
