"""OmegaConf resolvers the shipped YAML uses; every entry point registers them before composing."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def short_name(target: str) -> str:
    """``${short:fpa.objectives.dpo.DPO}`` -> ``DPO``: readable names for W&B groups and tags."""
    return str(target).rsplit(".", 1)[-1]


def _task_config(root: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's node (which would refer back to the directory being named)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(root, [k for k in root if k != "hydra"]), resolve=True)


def run_key(*, _root_: DictConfig) -> str:
    """``${run_key:}``: the hash of the config's result-changing keys (:mod:`fpa.config.identity`).

    The same command gives the same run directory, which is what lets a rerun resume.
    """
    from fpa.config.identity import config_hash

    return config_hash(_task_config(_root_))


def sweep_key(*, _root_: DictConfig) -> str:
    """``${sweep_key:}``: the hash of the sweep's base config, its command-line overrides and its parameters.

    A sweep's points are numbered in a fixed order, so the same sweep command gives the same
    ``<sweep dir>/<job num>`` for every point. The launcher names the sweep directory from the sweep's
    config first, and Hydra copies that config's resolver cache into every job's config (as it does
    for ``${now:}``); the key is kept there, so every job gets the sweep's key, not one of its own.
    (OmegaConf's ``use_cache`` cannot be combined with ``_root_``, hence the cache by hand.)
    """
    cache = OmegaConf.get_cache(_root_).setdefault("fpa_sweep_key", {})
    if "key" in cache:
        return cache["key"]
    import hashlib
    import json

    from fpa.config.identity import result_config

    overrides = sorted(str(o) for o in OmegaConf.select(_root_, "hydra.overrides.task", default=[]) or [])
    # Hydra resolves the sweep directory once before it applies the command line's overrides (the value is then
    # cached, above), so the overrides are read from the command itself: `-cn regime train.max_steps=600` and
    # `-cn regime train.max_steps=200` are two sweeps, not one directory whose job numbers collide.
    import sys

    command = sorted(a for a in sys.argv[1:] if a not in ("-m", "--multirun"))
    params = OmegaConf.select(_root_, "hydra.sweeper.params", default=None)
    params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else params
    name = OmegaConf.select(_root_, "hydra.job.config_name", default=None)
    text = json.dumps({"config": result_config(_task_config(_root_)), "overrides": overrides, "params": params,
                       "name": name, "command": command}, sort_keys=True, default=str)
    cache["key"] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return cache["key"]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("short"):
        OmegaConf.register_new_resolver("short", short_name)
    if not OmegaConf.has_resolver("run_key"):
        OmegaConf.register_new_resolver("run_key", run_key)
    if not OmegaConf.has_resolver("sweep_key"):
        OmegaConf.register_new_resolver("sweep_key", sweep_key)
