"""Stage 0: the base model — a hub id / local path as given, or the embedded tiny model built once."""

from __future__ import annotations

from pathlib import Path

from fpa.config.keys import stage_key
from fpa.models.spec import ModelSpec
from fpa.models.tiny import build_tiny_model
from fpa.stages.cache import cached_stage

VERSION = "1"


def base_inputs(model: ModelSpec, data_seed: int) -> dict:
    """What the base model depends on: a given name, or the tiny model's shape and seed."""
    if model.name_or_path:
        return {"name_or_path": str(model.name_or_path)}
    return {"build": model.build, "data_seed": data_seed}


def base_model(model: ModelSpec, data_seed: int, cache_dir: str | Path) -> tuple[str, str]:
    """(path or hub id, cache key) of the model every later stage starts from."""
    inputs = base_inputs(model, data_seed)
    key = stage_key("model", VERSION, **inputs)
    if model.name_or_path:
        return str(model.name_or_path), key
    path, _ = cached_stage(cache_dir, "model", key, inputs,
                           lambda d: build_tiny_model(Path(d), seed=data_seed, **model.build))
    return str(path), key
