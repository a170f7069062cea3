"""The composed config, built: every typed node instantiated and checked before any stage runs.

The entry points are the only readers of the config. :func:`train_parts` builds what ``fpa-train``
and ``fpa-generate`` need, :func:`eval_parts` what ``fpa-eval`` needs; each runs the cross-field
rules of :mod:`fpa.config.rules`. A bad value is a :class:`~fpa.guards.ConfigError` naming the key.
Stages receive these objects (never the config), and their cache keys are the hash of exactly
the objects they receive (:mod:`fpa.config.keys`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fpa.config.build import build, check_node_keys
from fpa.guards import ConfigError


@dataclass
class TrainParts:
    model: Any  # fpa.models.spec.ModelSpec
    task: Any
    sft: Any  # fpa.stages.warm_start.SFTSettings
    generate: Any  # fpa.generation.trajectories.SamplingSettings
    data: Any  # fpa.data.settings.DataSettings
    train: Any  # fpa.stages.train.TrainSettings
    module: Any  # fpa.module.ModuleSettings
    objective: Any
    fpa: Any
    optimizer: Any
    scheduler: Any
    trainer: Any  # fpa.trainer.TrainerFactory
    callbacks: list = field(default_factory=list)
    loggers: dict[str, DictConfig] = field(default_factory=dict)  # instantiated with save_dir=<run dir>
    benchmark: Any = None  # fpa.evaluation.suite.Suite
    rollout: Any = None  # fpa.generation.trajectories.SamplingSettings: rollouts during training (train.rollout_every)
    seed: int = 0
    data_seed: int = 0
    cache_dir: Path = Path("outputs/cache")
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config, for the record

    def make_loggers(self, save_dir: Path) -> list:
        return [build(node, f"logger.{name}", save_dir=str(save_dir)) for name, node in self.loggers.items()]

    @property
    def sft_skip(self) -> int:
        """Train problems the warm start used (generation takes the ones after them)."""
        return self.sft.n_problems if self.sft.enabled and not self.model.reference else 0


def _node(cfg: DictConfig, key: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"{key}: missing (choose one: {key}=<name>)")
    return cfg[key]


def _trainer(cfg: DictConfig):
    from fpa.trainer import TrainerFactory

    node = _node(cfg, "trainer")
    check_node_keys(node, "trainer")
    plain = OmegaConf.to_container(node, resolve=True)
    strategy = plain.get("strategy")
    if isinstance(strategy, dict) and "_target_" in strategy:
        build(strategy, "trainer.strategy")  # fails now, not when the first trainer is made
    return TrainerFactory(plain)


def _callbacks(cfg: DictConfig, context: dict[str, Any]) -> list:
    nodes = cfg.get("callbacks") or {}
    return [build(node, f"callbacks.{name}", context) for name, node in nodes.items() if node is not None]


def _record(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own node (which resolves only inside a Hydra job)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def _refers_to(node: Any, keys: set[str]) -> bool:
    """Whether ``node`` interpolates one of the config keys ``keys`` (then its errors repeat theirs)."""
    text = str(OmegaConf.to_container(node, resolve=False)) if OmegaConf.is_config(node) else ""
    return any(f"${{{k}." in text or f"${{{k}}}" in text for k in keys)


def _loggers(cfg: DictConfig) -> dict[str, DictConfig]:
    nodes = cfg.get("logger") or {}
    out = {}
    for name, node in nodes.items():
        if node is not None:
            check_node_keys(node, f"logger.{name}")
            out[str(name)] = node
    return out


def train_parts(cfg: DictConfig, stage: str = "train") -> TrainParts:
    """Every part ``fpa-train`` uses (``stage="generate"``: what ``fpa-generate`` uses), checked."""
    from fpa.config.rules import check_train

    problems: list[str] = []
    failed: set[str] = set()

    def attempt(key, fn, *args):
        try:
            return fn(*args)
        except ConfigError as e:
            failed.add(key)
            if key == "callbacks" or not _refers_to(cfg.get(key), failed - {key}):
                problems.extend(e.problems)  # else: the same mistake, reached through an interpolation
            return None

    wanted = ["model", "task", "data", "generate", "sft"] + (
        ["train", "module", "objective", "fpa", "optimizer", "scheduler", "benchmark", "rollout"] if stage == "train"
        else [])
    built = {key: attempt(key, lambda k: build(_node(cfg, k), k), key) for key in wanted}
    trainer = attempt("trainer", _trainer, cfg)
    context = {"suite": built.get("benchmark"), "prompt": getattr(built.get("model"), "prompt", None)}
    callbacks, loggers = [], {}
    if stage == "train" and not {"benchmark", "model"} & failed:
        callbacks = attempt("callbacks", _callbacks, cfg, context)
    if stage == "train":
        loggers = attempt("logger", _loggers, cfg)
    if problems:
        raise ConfigError(problems)
    parts = TrainParts(**built, **{k: None for k in ("train", "module", "objective", "fpa", "optimizer",
                                                        "scheduler", "benchmark", "rollout") if k not in built},
                       trainer=trainer, callbacks=callbacks or [], loggers=loggers or {},
                       seed=int(cfg.get("seed", 0)), data_seed=int(cfg.get("data_seed", 0)),
                       cache_dir=Path(str(OmegaConf.select(cfg, "paths.cache_dir") or "outputs/cache")),
                       config=_record(cfg))
    check_train(parts, stage)
    return parts


@dataclass
class EvalParts:
    model: Any  # prompt format, dtype, trust_remote_code
    benchmark: Any  # the suite
    generate: Any  # the backend and its engine options
    config: dict[str, Any] = field(default_factory=dict)


def eval_parts(cfg: DictConfig) -> EvalParts:
    """What ``fpa-eval`` uses, checked (``model_path`` and the other inputs are checked by the entry point)."""
    problems: list[str] = []
    built = {}
    for key in ("model", "benchmark", "generate"):
        try:
            built[key] = build(_node(cfg, key), key)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return EvalParts(**built, config=_record(cfg))
