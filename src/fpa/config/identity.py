"""What identifies a run: the part of the resolved config that changes its result, and its hash.

Keys that only say where things go or how progress is shown are left out (:data:`VOLATILE`), so
the same command gives the same run directory (``hydra.run.dir: outputs/runs/${run_key:}``) and a
checkpoint can be compared with the settings it is resumed under (:func:`differences`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Dotted keys (prefixes) that never change what a run computes.
# train.precompute_reference changes where the reference's log-probs are computed, not what they are (the
# same code on the same rows, equal up to float rounding).
VOLATILE = ("hydra", "paths", "logger", "sweep", "train.resume", "train.resume_override", "train.log_every_n_steps",
            "train.precompute_reference", "callbacks.eval", "callbacks.checkpoint", "callbacks.entanglement")
# Keys added after runs were made: left out while null (or 0), so those runs keep their directory and resume.
OMIT_IF_NULL = ("model.lora", "fpa.guard", "train.rollout_every")


def _offline(config: dict[str, Any]) -> bool:
    """No rollouts during training: the ``rollout`` node changes nothing and is left out."""
    train = config.get("train")
    return not (isinstance(train, dict) and train.get("rollout_every"))


def _drop(node: Any, prefix: str) -> Any:
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if dotted in VOLATILE or (dotted in OMIT_IF_NULL and value in (None, 0)):
            continue
        out[key] = _drop(value, dotted + ".")
    return out


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a plain, resolved config) without the :data:`VOLATILE` keys."""
    out = _drop(config, "")
    if isinstance(out, dict) and _offline(config):
        out.pop("rollout", None)
    return out


def config_hash(config: dict[str, Any], length: int = 12) -> str:
    """A short stable hash of :func:`result_config` of ``config``."""
    text = json.dumps(result_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key old → new`` for every result-changing key that differs (``<absent>`` where a side lacks it)."""
    a, b = _flat(result_config(old)), _flat(result_config(new))
    missing = "<absent>"
    return [f"{k} {a.get(k, missing)} → {b.get(k, missing)}" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]
