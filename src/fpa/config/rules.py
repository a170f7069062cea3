"""Rules across nodes, which no single node can check: run by the entry points after building.

- FPA (λ > 0) on an objective whose gradient coefficients do not depend on the policy (SFT / RFT:
  every token's coefficient is 1/|y|) changes nothing and would load a reference for nothing:
  refused. Detected generically, by evaluating the coefficients at two policies on a synthetic batch.
- The future guard (``fpa.guard``) gates pairs: refused for objectives that do not train on pairs.
- Sequence lengths (``data.max_length``, ``sft.max_length``) must fit the model's positions.
- ``train.precompute_reference=true`` where the reference cannot be precomputed (FPA on: it needs the
  reference's full logits; KTO: its KL rows are built per batch): refused (:func:`fpa.data.reference.blocker`).
- Sharded training (``trainer=fsdp``) supports only some precisions, and no LoRA adapters.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from fpa.data.reference import blocker
from fpa.guards import ConfigError

SHARDED_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-true")


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
    # Stored behaviour log-probs: an objective with a ratio to the behaviour policy (GRPO) depends on the policy.
    x = ObjectiveInputs(policy=lp(), mask=mask, reference=lp(), chosen=chosen, reward=chosen.double(), group=group,
                        kl=kl, behaviour=lp())
    try:
        a, _ = token_coefficients(objective, x)
        c, _ = token_coefficients(objective, replace(x, policy=lp()))
    except Exception:
        return False  # cannot tell on a synthetic batch: let training decide
    return bool(torch.allclose(a, c, rtol=1e-9, atol=1e-12))


def check_train(parts: Any, stage: str = "train") -> None:
    """``parts``: a :class:`fpa.config.parts.TrainParts`."""
    problems: list[str] = []
    positions = parts.model.max_positions
    if positions:
        lengths = {"data.max_length": parts.data.max_length}
        if parts.sft.enabled and parts.sft.max_length != parts.data.max_length:
            lengths["sft.max_length"] = parts.sft.max_length
        for key, value in lengths.items():
            if value > positions:
                problems.append(f"{key}: {value} exceeds the model's {positions} positions")
    if stage == "train":
        lam = parts.fpa.lam
        inert = lam > 0 and fpa_changes_nothing(parts.objective)
        if inert:
            problems.append(f"fpa.lam: λ={lam} with objective {type(parts.objective).__name__} does nothing: its "
                            "gradient coefficients do not depend on the policy, so there is no future policy to "
                            "anchor to a reference (and one would be loaded for nothing); set fpa.lam=0")
        guard, data = getattr(parts.fpa, "guard", None), getattr(parts.objective, "data", None)
        if guard is not None and data != "pairs":
            problems.append(f"fpa.guard: {guard} gates the rejected side of pairs, but objective "
                            f"{type(parts.objective).__name__} trains on {data} rows; set fpa.guard=null "
                            "or choose an objective that trains on pairs")
        if parts.train.rollout_every and parts.data.trajectories:
            problems.append(f"data.trajectories: {parts.data.trajectories} is given, but train.rollout_every="
                            f"{parts.train.rollout_every} trains on the live policy's own samples; set one of them")
        why = blocker(parts.objective, parts.fpa) if parts.train.precompute_reference is True else None
        if why is not None and not inert:  # an inert FPA is reported above
            problems.append(f"train.precompute_reference: true, but {why}; set it to auto (on wherever allowed) "
                            "or false")
    strategy = (parts.trainer.node.get("strategy") or {}) if parts.trainer is not None else {}
    if isinstance(strategy, dict) and "FSDP" in str(strategy.get("_target_", "")):
        precision = parts.trainer.precision
        if precision not in SHARDED_PRECISIONS:
            problems.append(f"trainer.precision: {precision} is not supported with sharding (trainer=fsdp); "
                            f"use {', '.join(SHARDED_PRECISIONS)}")
        if getattr(parts.model, "lora", None) is not None:
            problems.append("model.lora: LoRA adapters are not supported with sharding (trainer=fsdp); "
                            "set model.lora=null or use a single-device / ddp trainer")
        if stage == "train" and parts.train.rollout_every:
            problems.append(f"train.rollout_every: {parts.train.rollout_every}: rollouts sample with the whole "
                            "policy on one device, which sharding (trainer=fsdp) splits; use a single-device / "
                            "ddp trainer, or train offline (train.rollout_every=0)")
    if problems:
        raise ConfigError(problems)
