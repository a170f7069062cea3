"""Compose configs as the entry points do, and check every shipped preset (``fpa-validate``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fpa.config.conf_dir import conf_dir
from fpa.guards import ConfigError

ENTRY_CONFIGS = ("train", "generate", "eval")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir()) / group).glob("*.yaml"))


class Composer:
    """Hydra initialised once for many compositions (initialising is most of the cost)."""

    def __enter__(self):
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from fpa.config.resolvers import register_resolvers

        register_resolvers()
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        self._ctx = initialize_config_dir(config_dir=conf_dir(), version_base="1.3")
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    def __call__(self, config_name: str, overrides: list[str]) -> DictConfig:
        from hydra import compose as hydra_compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            return hydra_compose(config_name=config_name, overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as e:
            msg = " ".join(str(e).split())
            if "Could not find" in msg:
                for override in overrides:
                    group, _, name = override.partition("=")
                    if f"{group}/{name}" in msg and (Path(conf_dir()) / group).is_dir():
                        msg = f"{group}={name}: no such config (conf/{group} has: {', '.join(options(group))})"
            raise ConfigError(msg) from None


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a config like the entry points do; a bad override becomes a one-line ConfigError."""
    with Composer() as c:
        return c(config_name, overrides)


def check(cfg: DictConfig, config_name: str = "train") -> list[str]:
    """Every problem of a composed entry-point config, one line each (empty: fine). Loads no model."""
    from fpa.config.parts import eval_parts, train_parts

    try:
        if config_name == "eval":
            eval_parts(cfg)
        else:
            train_parts(cfg, "generate" if config_name == "generate" else "train")
    except ConfigError as e:
        return e.problems
    return []


def preset_matrix() -> list[tuple[str, list[str]]]:
    """(config name, overrides): every experiment, every model, trainer and objective, generate/eval per model."""
    combos: list[tuple[str, list[str]]] = [("train", [])]
    combos += [("train", [f"experiment={e}"]) for e in options("experiment")]
    combos += [("train", [f"model={m}"]) for m in options("model")]
    combos += [("train", [f"trainer={t}"]) for t in options("trainer")]
    for objective in options("objective"):
        combos.append(("train", [f"objective={objective}", f"fpa.lam={'0' if objective in ('sft', 'rft') else '1.0'}"]))
    combos += [("train", [f"benchmark={b}"]) for b in options("benchmark")]
    combos += [(name, [f"model={m}"]) for name in ("generate", "eval") for m in options("model")]
    return combos


def check_presets() -> list[tuple[str, list[str], list[str]]]:
    """(config name, overrides, problems) for every combination of :func:`preset_matrix`."""
    out = []
    with Composer() as compose_one:
        for name, overrides in preset_matrix():
            try:
                problems = check(compose_one(name, overrides), name)
            except ConfigError as e:
                problems = e.problems
            out.append((name, overrides, problems))
    return out
