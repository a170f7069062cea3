"""Optimizer and learning-rate schedule nodes (``conf/optimizer/``, ``conf/scheduler/``).

Each node is a validated, frozen dataclass that builds the torch object when called with what
only training knows: ``optimizer(params)``, ``scheduler(optimizer)``. A config error therefore
shows when the config is built, before any stage runs, not when the optimizer is first made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fpa import checks


@dataclass(frozen=True)
class AdamW:
    lr: float = 3.0e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    # None: the fused kernel where every parameter allows it (plain floating tensors on CPU or CUDA), else
    # torch's default (a for-loop on CPU); true: fused (torch refuses where unsupported); false: never.
    fused: bool | None = None

    def __post_init__(self) -> None:
        checks.number("lr", self.lr, 0, strict=True)
        checks.number("weight_decay", self.weight_decay, 0)
        checks.number("eps", self.eps, 0, strict=True)
        if len(self.betas) != 2:
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)}")
        for b in self.betas:
            checks.number("betas", b, 0, 1)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def __call__(self, params) -> torch.optim.AdamW:
        params = list(params)
        fused = fused_supported(params) if self.fused is None else self.fused
        extra = {"fused": True} if fused else ({"fused": False} if self.fused is False else {})
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                                 eps=self.eps, **extra)


def fused_supported(params) -> bool:
    """True when torch's fused AdamW takes every parameter: plain (not sharded) floating tensors, all on CPU or
    all on one CUDA device kind. On CPU fused was 6.7x faster than the default for-loop at 60M parameters."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a private helper: fall back to the devices torch has long had fused AdamW for
        supported = {"cpu", "cuda"}
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    if not tensors:
        return False
    devices = {p.device.type for p in tensors}
    return (len(devices) == 1 and devices <= supported
            and all(type(p.data) is torch.Tensor and p.is_floating_point() for p in tensors))


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` of the peak at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class WarmupCosine:
    """LR multiplier per optimizer step: warm-up, then cosine to ``min_lr_ratio`` (1.0: constant after warm-up)."""

    warmup_steps: int = 10
    min_lr_ratio: float = 1.0
    total_steps: int = 1000

    def __post_init__(self) -> None:
        checks.number("warmup_steps", self.warmup_steps, 0, integer=True)
        checks.number("min_lr_ratio", self.min_lr_ratio, 0, 1)
        checks.number("total_steps", self.total_steps, 1, integer=True)

    def factor(self, step: int) -> float:
        return warmup_cosine(step, max(1, self.warmup_steps), self.total_steps, self.min_lr_ratio)

    def __call__(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)
