"""Build a typed config node: refuse unknown keys (naming close valid ones), instantiate, name the key on error.

Every swappable part is a node with ``_target_``; its class (a dataclass, an objective, a task,
a Lightning class) defines the keys it takes. :func:`build` checks the node's keys against the
target's signature before instantiating, so ``+objective.bta=1`` is refused with
``objective.bta: unknown key (did you mean beta?)``, and a ``ValueError`` raised by the class's own
checks comes back as a :class:`~fpa.guards.ConfigError` prefixed with the node's path. Targets that
take ``**kwargs`` (open mappings such as Lightning Trainer arguments) are left to check themselves.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fpa.guards import ConfigError

SPECIAL = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def import_target(path: str, target: str) -> Any:
    module, _, name = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{path}._target_: cannot import {target!r}") from None


def accepted_keys(target: Any) -> set[str] | None:
    """The keyword arguments ``target`` takes; None when it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_keys(path: str, keys: set[str], accepted: set[str]) -> None:
    unknown = sorted(keys - accepted)
    if not unknown:
        return
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(accepted), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"valid keys: {', '.join(sorted(accepted))}"
        lines.append(f"{path}.{key}: unknown key ({hint})")
    raise ConfigError(lines)


def check_node_keys(node: DictConfig | dict, path: str) -> Any:
    """The target of ``node`` after checking its keys (and, recursively, those of nested nodes)."""
    target = import_target(path, node["_target_"])
    accepted = accepted_keys(target)
    if accepted is not None:
        check_keys(path, {str(k) for k in node.keys()} - SPECIAL, accepted)
    for key in node.keys():
        child = node[key]
        if isinstance(child, (DictConfig, dict)) and "_target_" in child:
            check_node_keys(child, f"{path}.{key}")
    return target


def build(node: DictConfig | dict | None, path: str, context: dict[str, Any] | None = None, **runtime: Any) -> Any:
    """Instantiate ``node`` (at config path ``path``), with ``runtime`` arguments added.

    ``context``: built objects offered to the target, passed for the parameters it takes that the
    node does not set (the eval callback takes the suite and the prompt this way).
    A node with ``_partial_: true`` gives a ``functools.partial``; its keys are still checked.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if node is None:
        raise ConfigError(f"{path}: missing (choose one: {path}=<name>)")
    if not isinstance(node, DictConfig):
        node = OmegaConf.create(node)
    if "_target_" not in node:
        raise ConfigError(f"{path}: not a typed node (no _target_)")
    try:
        target = check_node_keys(node, path)
        if context:
            accepted = accepted_keys(target) or set()
            runtime = {**{k: v for k, v in context.items() if k in accepted and k not in node}, **runtime}
        if not runtime:
            return instantiate(node, _convert_="all")
        # Objects are passed through untouched (instantiate would turn a dataclass into a config).
        made = instantiate(node, _convert_="all", _partial_=True)
        return functools.partial(made, **runtime) if node.get("_partial_", False) else made(**runtime)
    except ConfigError:
        raise
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ConfigError):
            raise cause from None
        full_key = str(e).rsplit("full_key:", 1)[1].strip() if "full_key:" in str(e) else ""
        raise ConfigError(_describe(full_key or path, cause)) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(_describe(path, e)) from None


def _describe(path: str, err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if text.startswith("Error in call to target") or text.startswith("Error locating target"):
        text = text.split(":", 1)[-1].strip()
    return f"{path}.{text}" if _names_field(text) else f"{path}: {text}"


def _names_field(text: str) -> bool:
    """A message of the form ``field: ...`` (from :mod:`fpa.checks`)."""
    head, sep, _ = text.partition(":")
    return bool(sep) and head.replace("_", "").replace(".", "").isalnum() and " " not in head
