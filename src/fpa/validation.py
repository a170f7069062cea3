"""Config checks that run before any model loads: one clear line per problem.

:func:`check_config` raises :class:`fpa.guards.ConfigError` listing every problem found; entry
points call it first (``fpa-train`` before its first stage). :func:`validate_presets` composes every
model preset with every experiment (and every trainer / objective preset) and checks each, without
downloading anything: ``python -m fpa.cli.validate``.

What "FPA with an objective that has no reference" means here: FPA needs reference logits, and the
train stage loads a reference for every objective when ``fpa.lam > 0`` (SimPER's loss does not use
one, but its coefficients depend on the policy, so the future policy changes them). The case with
nothing to anchor is an objective whose gradient coefficients do not depend on the policy at all
(SFT / RFT: the coefficient of every token is 1/|y|): the future policy changes nothing and the
reference would be loaded for nothing. Such a config is refused. This is detected generically, by
evaluating the objective's coefficients at two different policies on a small synthetic batch.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fpa.guards import ConfigError

DTYPES = ("float32", "bfloat16", "float16", "auto")
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".ckpt", ".pt", ".bin", ".safetensors",
                   ".txt")


def _conf_dir() -> Path:
    from fpa.cli.conf_dir import conf_dir

    return Path(conf_dir())


def _import(target: str) -> Any:
    """The object a dotted ``_target_`` names (ImportError/AttributeError if none), quietly."""
    import importlib

    module, _, name = str(target).rpartition(".")
    if not module:
        raise ImportError(f"{target!r} is not a dotted path")
    return getattr(importlib.import_module(module), name)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (_conf_dir() / group).glob("*.yaml"))


def _looks_local(value: str) -> bool:
    """A local path, as opposed to a hub id like ``Qwen/Qwen2.5-Math-1.5B`` (which cannot be checked offline)."""
    return (value.startswith(("/", "./", "../", "~")) or value.lower().endswith(_LOCAL_SUFFIXES)
            or value.count("/") > 1 or os.path.exists(os.path.expanduser(value)))


def _check_input_path(key: str, value: Any, problems: list[str], what: str = "path") -> None:
    if not isinstance(value, str) or not value or value == "???":
        return
    if _looks_local(value) and not Path(value).expanduser().exists():
        problems.append(f"{key}: {what} {value} does not exist")


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    try:
        return node.get(key, default) if isinstance(node, (DictConfig, dict)) else getattr(node, key, default)
    except Exception:  # an interpolation that does not resolve
        return default


def _number(problems: list[str], key: str, value: Any, low: float | None = None, high: float | None = None,
            strict_low: bool = False, integer: bool = False, optional: bool = False) -> None:
    if value is None:
        if not optional:
            problems.append(f"{key}: required, got null")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        problems.append(f"{key}: must be {'an integer' if integer else 'a number'}, got {value!r}")
        return
    if value != value:
        problems.append(f"{key}: must be a number, got NaN")
    elif low is not None and (value <= low if strict_low else value < low):
        problems.append(f"{key}: must be {'>' if strict_low else '>='} {low}, got {value}")
    elif high is not None and value > high:
        problems.append(f"{key}: must be <= {high}, got {value}")


def _choice(problems: list[str], key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        problems.append(f"{key}: must be one of {' | '.join(map(str, choices))}, got {value!r}")


# --------------------------------------------------------------------------------------------- objective / FPA


def _objective(cfg: DictConfig, problems: list[str]):
    from hydra.utils import instantiate

    from fpa.objectives.base import Objective

    node = _get(cfg, "objective")
    target = _get(node, "_target_")
    names = ", ".join(_options("objective"))
    if not target:
        problems.append(f"objective: none chosen (objective=<{names}>)")
        return None
    try:
        cls = _import(str(target))
    except Exception:
        problems.append(f"objective: unknown objective {target!r} (conf/objective has: {names})")
        return None
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        problems.append(f"objective: {target} is not an fpa.objectives.base.Objective")
        return None
    try:
        obj = instantiate(node)
    except Exception as e:
        cause = e.__cause__ or e
        problems.append(f"objective: {target}: {str(cause).splitlines()[0]}")
        return None
    n = len(problems)
    for attr in ("beta", "clip"):
        if hasattr(obj, attr):
            _number(problems, f"objective.{attr}", getattr(obj, attr), 0, strict_low=True)
    for attr in ("alpha", "desirable_weight", "undesirable_weight"):
        if hasattr(obj, attr):
            _number(problems, f"objective.{attr}", getattr(obj, attr), 0)
    return obj if len(problems) == n else None


def fpa_changes_nothing(objective) -> bool:
    """True when the objective's gradient coefficients do not depend on the policy (FPA is then inert)."""
    from fpa.fpa import token_coefficients
    from fpa.objectives.base import ObjectiveInputs

    g = torch.Generator().manual_seed(0)
    b, t = 4, 5

    def lp() -> torch.Tensor:
        return -torch.rand(b, t, generator=g, dtype=torch.float64) * 3 - 0.01

    mask = torch.ones(b, t, dtype=torch.bool)
    kind = getattr(objective, "data", "pairs")
    chosen = {"pairs": [True, True, False, False], "correct": [True] * 4}.get(kind, [True, False, True, False])
    chosen = torch.tensor(chosen)
    group = torch.tensor([0, 0, 1, 1]) if kind == "groups" else torch.arange(b)
    kl = ObjectiveInputs(policy=lp(), mask=mask, reference=lp()) if objective.needs_kl_rows else None
    x = ObjectiveInputs(policy=lp(), mask=mask, reference=lp(), chosen=chosen, reward=chosen.double(), group=group,
                        kl=kl)
    try:
        a, _ = token_coefficients(objective, x)
        c, _ = token_coefficients(objective, replace(x, policy=lp()))
    except Exception:
        return False  # cannot tell on a synthetic batch: let training decide
    return bool(torch.allclose(a, c, rtol=1e-9, atol=1e-12))


def _fpa(cfg: DictConfig, objective, problems: list[str]) -> None:
    from fpa.fpa import SIDES, FuturePolicy

    node = _get(cfg, "fpa")
    if node is None:
        problems.append("fpa: missing (fpa=default, fpa.lam=0 for the base objective)")
        return
    allowed = {f.name for f in fields(FuturePolicy)}
    unknown = sorted(set(node.keys()) - allowed)
    if unknown:
        problems.append(f"fpa: unknown option(s) {', '.join(unknown)} (fpa takes: {', '.join(sorted(allowed))})")
    lam = _get(node, "lam", 0.0)
    n = len(problems)
    _number(problems, "fpa.lam", lam, 0)
    if len(problems) > n and isinstance(lam, (int, float)) and not isinstance(lam, bool) and lam < 0:
        problems[-1] = f"fpa.lam: λ must be >= 0 (0 is the base objective), got {lam}"
    _choice(problems, "fpa.apply_to", _get(node, "apply_to", "both"), SIDES)
    if objective is not None and isinstance(lam, (int, float)) and lam > 0 and fpa_changes_nothing(objective):
        name = type(objective).__name__
        problems.append(f"fpa: λ={lam} with objective {name} does nothing: its gradient coefficients do not depend "
                        f"on the policy, so there is no future policy to anchor to a reference (and one would be "
                        f"loaded for nothing); set fpa.lam=0")


# --------------------------------------------------------------------------------------------- model / prompt


def _model(cfg: DictConfig, problems: list[str]) -> int | None:
    """Checks ``model``; returns the model's maximum positions when the config knows them."""
    from fpa.prompting import PromptFormat

    m = _get(cfg, "model")
    if m is None:
        problems.append("model: missing (model=<" + ", ".join(_options("model")) + ">)")
        return None
    _choice(problems, "model.dtype", _get(m, "dtype"), DTYPES)
    path, build = _get(m, "name_or_path"), _get(m, "build")
    if not path and not build:
        problems.append("model: set model.name_or_path (hub id or local directory) or model.build (the tiny model)")
    _check_input_path("model.name_or_path", path, problems, "model directory")
    trust = _get(m, "trust_remote_code", False)
    if not isinstance(trust, bool):
        problems.append(f"model.trust_remote_code: must be true or false, got {trust!r}")
    if not isinstance(_get(m, "warm_start", False), bool):
        problems.append(f"model.warm_start: must be true or false, got {_get(m, 'warm_start')!r}")
    prompt = _get(m, "prompt")
    if prompt is None:
        problems.append("model.prompt: missing (template, use_chat_template, system)")
    else:
        allowed = {f.name for f in fields(PromptFormat)}
        keys = set(prompt.keys())
        if keys - allowed:
            problems.append(f"model.prompt: unknown field(s) {', '.join(sorted(keys - allowed))} "
                            f"(PromptFormat takes: {', '.join(sorted(allowed))})")
        template = _get(prompt, "template", "{question}\n")
        if not isinstance(template, str) or "{question}" not in template:
            problems.append(f"model.prompt.template: must contain {{question}}, got {template!r}")
        else:
            try:
                template.format(question="q")
            except (KeyError, IndexError, ValueError) as e:
                problems.append(f"model.prompt.template: not a str.format template with only {{question}} "
                                f"({type(e).__name__}: {e}); write literal braces as {{{{ }}}}")
        if not isinstance(_get(prompt, "use_chat_template", False), bool):
            problems.append("model.prompt.use_chat_template: must be true or false")
        system = _get(prompt, "system")
        if system is not None and not isinstance(system, str):
            problems.append(f"model.prompt.system: must be a string or null, got {system!r}")
    arch = _get(m, "arch")
    max_pos = _get(arch, "max_position_embeddings") if arch is not None else None
    if arch is not None:
        _arch(arch, problems)
    if max_pos is None and build is not None and not path:
        max_pos = _get(build, "max_positions")
    for key in ("max_length", "max_new_tokens"):
        value = _get(m, key)
        if value is not None:
            _number(problems, f"model.{key}", value, 1, integer=True)
            if max_pos and isinstance(value, int) and value > max_pos:
                problems.append(f"model.{key}: {value} exceeds the model's {max_pos} positions")
    return max_pos


def _arch(arch: Any, problems: list[str]) -> None:
    """``model.arch`` (the shape from config.json) must make a transformers config, offline."""
    from transformers import AutoConfig

    spec = OmegaConf.to_container(arch, resolve=True) if isinstance(arch, DictConfig) else dict(arch)
    kind = spec.pop("model_type", None)
    try:
        config = AutoConfig.for_model(kind, **spec)
    except Exception as e:
        problems.append(f"model.arch: not a transformers config ({type(e).__name__}: {str(e).splitlines()[0]})")
        return
    heads = getattr(config, "num_attention_heads", None)
    if heads and config.hidden_size % heads:
        problems.append(f"model.arch: hidden_size {config.hidden_size} is not a multiple of {heads} heads")


# --------------------------------------------------------------------------------------------- trainer


def _trainer(cfg: DictConfig, problems: list[str]) -> None:
    import lightning as L
    from fpa.stages.runtime import TRAINER_EXTRAS

    t = _get(cfg, "trainer")
    if t is None:
        problems.append("trainer: missing (trainer=<" + ", ".join(_options("trainer")) + ">)")
        return
    accepted = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    unknown = sorted(set(t.keys()) - accepted - set(TRAINER_EXTRAS))
    if unknown:
        problems.append(f"trainer: unknown option(s) {', '.join(unknown)} (not lightning.Trainer arguments)")
    precision = _get(t, "precision", "32-true")
    try:
        from lightning.fabric.connector import _convert_precision_to_unified_args

        precision = _convert_precision_to_unified_args(precision)
    except (ValueError, ImportError) as e:
        problems.append(f"trainer.precision: {str(e).splitlines()[0]}")
    strategy = _get(t, "strategy")
    if isinstance(strategy, (DictConfig, dict)):
        target = _get(strategy, "_target_")
        try:
            cls = _import(str(target))
        except Exception:
            problems.append(f"trainer.strategy: cannot import {target!r}")
            cls = None
        from lightning.pytorch.strategies import ModelParallelStrategy

        if cls is not None and issubclass(cls, ModelParallelStrategy) and precision not in (
                "32-true", "bf16-mixed", "bf16-true", "16-true"):
            problems.append(f"trainer.precision: {precision} is not supported with sharding (trainer=fsdp); "
                            "use bf16-mixed, bf16-true, 16-true or 32-true")
    if not isinstance(_get(t, "gradient_checkpointing", False), bool):
        problems.append("trainer.gradient_checkpointing: must be true or false")


# --------------------------------------------------------------------------------------------- train / data


def _data_and_train(cfg: DictConfig, max_pos: int | None, problems: list[str]) -> None:
    d, t = _get(cfg, "data"), _get(cfg, "train")
    if d is not None:
        _number(problems, "data.batch_size", _get(d, "batch_size"), 1, integer=True)
        _number(problems, "data.max_length", _get(d, "max_length"), 2, integer=True)
        _choice(problems, "data.overlong", _get(d, "overlong", "drop"), ("drop", "truncate"))
        _choice(problems, "data.pairing", _get(d, "pairing", "cap"), ("all", "one", "cap"))
        _number(problems, "data.max_pairs_per_problem", _get(d, "max_pairs_per_problem", 1), 1, integer=True)
        ml = _get(d, "max_length")
        if max_pos and isinstance(ml, int) and ml > max_pos:
            problems.append(f"data.max_length: {ml} exceeds the model's {max_pos} positions")
    if t is not None:
        _number(problems, "train.lr", _get(t, "lr"), 0, strict_low=True)
        _number(problems, "train.max_steps", _get(t, "max_steps"), 0, integer=True)
        _number(problems, "train.warmup_steps", _get(t, "warmup_steps", 0), 0, integer=True)
        _number(problems, "train.weight_decay", _get(t, "weight_decay", 0.0), 0)
        _number(problems, "train.min_lr_ratio", _get(t, "min_lr_ratio", 1.0), 0, 1)
        _number(problems, "train.chunk_size", _get(t, "chunk_size"), 1, integer=True)
        _number(problems, "train.checkpoint_every", _get(t, "checkpoint_every", 100), 1, integer=True)
        micro = _get(t, "micro_batch_size")
        _number(problems, "train.micro_batch_size", micro, 1, integer=True, optional=True)
        bs = _get(d, "batch_size") if d is not None else None
        if isinstance(micro, int) and isinstance(bs, int) and micro >= 1 and bs % micro:
            problems.append(f"train.micro_batch_size: {micro} does not divide data.batch_size={bs}")
        if not isinstance(_get(t, "gradient_checkpointing", False), bool):
            problems.append("train.gradient_checkpointing: must be true or false")
        resume = _get(t, "resume", "auto")
        if resume not in (None, True, False, "auto", "never", "must"):
            _check_input_path("train.resume", str(resume), problems, "checkpoint")


def _task(cfg: DictConfig, problems: list[str]) -> None:
    task = _get(cfg, "task")
    if task is None:
        return
    target = _get(task, "_target_")
    try:
        _import(str(target))
    except Exception:
        problems.append(f"task: unknown task class {target!r} (conf/task has: {', '.join(_options('task'))})")
    _check_input_path("task.path", _get(task, "path"), problems, "data file")


def _stages(cfg: DictConfig, problems: list[str]) -> None:
    g = _get(cfg, "generate")
    if g is not None:
        _number(problems, "generate.k", _get(g, "k", 1), 1, integer=True)
        _number(problems, "generate.n_problems", _get(g, "n_problems", 1), 1, integer=True)
        _number(problems, "generate.temperature", _get(g, "temperature", 1.0), 0)
        _number(problems, "generate.top_p", _get(g, "top_p", 1.0), 0, 1, strict_low=True)
        _number(problems, "generate.max_new_tokens", _get(g, "max_new_tokens", 1), 1, integer=True)
    for key in ("model_path", "base_model", "tokenizer"):  # fpa-generate / fpa-eval inputs
        if key in cfg and not OmegaConf.is_missing(cfg, key):
            _check_input_path(key, _get(cfg, key), problems)


def validate_config(cfg: DictConfig, stage: str = "all") -> list[str]:
    """Every problem found in a composed ``train``-style config, one line each (empty: fine)."""
    problems: list[str] = []
    if stage in ("all", "train"):
        objective = _objective(cfg, problems)
        _fpa(cfg, objective, problems)
    max_pos = _model(cfg, problems)
    if stage in ("all", "train"):
        _trainer(cfg, problems)
        _data_and_train(cfg, max_pos, problems)
    _task(cfg, problems)
    if stage == "all":
        _stages(cfg, problems)
    return problems


def check_config(cfg: DictConfig, stage: str = "all") -> None:
    """Raise :class:`ConfigError` (one line per problem) unless the config is sound. Loads no model."""
    problems = validate_config(cfg, stage)
    if problems:
        raise ConfigError(problems)


# --------------------------------------------------------------------------------------------- every preset


class _Composer:
    """Hydra initialised once for many compositions (initialising is most of the cost)."""

    def __enter__(self):
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from fpa.config.resolvers import register_resolvers

        register_resolvers()
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        self._ctx = initialize_config_dir(config_dir=str(_conf_dir()), version_base="1.3")
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
                    if f"{group}/{name}" in msg and (_conf_dir() / group).is_dir():
                        msg = f"{group}={name}: no such config (conf/{group} has: {', '.join(_options(group))})"
            raise ConfigError(msg) from None


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a config like the entry points do; a bad override becomes a one-line ConfigError."""
    with _Composer() as c:
        return c(config_name, overrides)


def preset_matrix() -> list[tuple[str, list[str]]]:
    """(config name, overrides): every model × experiment, every trainer, every objective, generate/eval."""
    combos: list[tuple[str, list[str]]] = []
    experiments = [None, *_options("experiment")]
    for model in _options("model"):
        for exp in experiments:
            combos.append(("train", [f"model={model}"] + ([f"experiment={exp}"] if exp else [])))
    for trainer in _options("trainer"):
        combos.append(("train", [f"trainer={trainer}"]))
    for objective in _options("objective"):
        lam = "0" if objective in ("sft", "rft") else "1.0"
        combos.append(("train", [f"objective={objective}", f"fpa.lam={lam}"]))
    for name in ("generate", "eval"):
        if (_conf_dir() / f"{name}.yaml").exists():
            for model in _options("model"):
                combos.append((name, [f"model={model}"]))
    return combos


def _swap_group(base: DictConfig, overrides: list[str]) -> DictConfig | None:
    """``base`` with group options swapped in from their YAML files, when that is all the overrides do.

    Composing with Hydra costs most of a second; a group file without a defaults list or package
    directive merges the same way. None when Hydra is needed.
    """
    cfg = base.copy()
    for override in overrides:
        key, _, value = override.partition("=")
        path = _conf_dir() / key / f"{value}.yaml"
        if key in ("model", "trainer", "objective") and path.exists():
            text = path.read_text()
            if "defaults:" in text or "@package" in text:
                return None
            OmegaConf.update(cfg, key, OmegaConf.load(path), merge=False)
        elif key.startswith("fpa.") and "/" not in key:
            import yaml

            OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
        else:
            return None
    return cfg


def validate_presets() -> list[tuple[str, list[str], list[str]]]:
    """(config name, overrides, problems) for every combination of :func:`preset_matrix`."""
    out, bases = [], {}
    with _Composer() as compose_one:
        for name, overrides in preset_matrix():
            try:
                if name not in bases:
                    bases[name] = compose_one(name, [])
                cfg = _swap_group(bases[name], overrides)
                if cfg is None:
                    cfg = compose_one(name, overrides)
                problems = validate_config(cfg, "all" if name in ("train", "generate") else "model")
            except ConfigError as e:
                problems = e.problems
            out.append((name, overrides, problems))
    return out
