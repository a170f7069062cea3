"""Offline policy gradient on verifiable rewards, with a group baseline and clipped importance
weights against the reference policy that generated the data:

    token:     L_i = −A_i · Σ_t sg[w_t] · log π_θ(y_t),   w_t = min(π_θ(y_t)/π_ref(y_t), clip)
    sequence:  L_i = −A_i · sg[w] · log π_θ(y),           w   = min(Π_t π_θ(y_t)/π_ref(y_t), clip)

A_i = r_i − mean of r over the rows of its group (``baseline="group_mean"``) or r_i (``"none"``).
Only an upper clip: it bounds the variance when the policy has moved past the data's generator;
small ratios are already bounded by 0. The weights are read from ``x.policy`` so that FPA, which
evaluates this objective at the future log-probs, gets the future policy's importance weights.

The loss VALUE is a surrogate (weights under stop-gradient): its gradient is the policy
gradient −Σ A·w·∇log π, while its finite-difference derivative also moves w.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs

WEIGHTINGS = ("token", "sequence")
BASELINES = ("group_mean", "none")


class OfflinePG(Objective):
    needs_reference = True
    data = "groups"
    reference_on_served_rows = True  # the importance weights read the served rows' tokens only
    value_is_surrogate: ClassVar[bool] = True  # see module docstring

    def __init__(self, clip: float = 2.0, weighting: str = "token", reduce: str = "sum",
                 baseline: str = "group_mean") -> None:
        super().__init__(reduce)
        from fpa import checks

        checks.choice("weighting", weighting, WEIGHTINGS)
        checks.choice("baseline", baseline, BASELINES)
        checks.number("clip", clip, 0, strict=True)  # upper bound on π/π_ref
        self.clip, self.weighting, self.baseline = float(clip), weighting, baseline

    def advantage(self, x: ObjectiveInputs) -> Tensor:
        """[B] reward minus the mean reward of the row's group."""
        if x.reward is None:
            raise ValueError("OfflinePG needs rewards (ObjectiveInputs.reward)")
        reward = x.reward.to(x.policy.dtype)
        if self.baseline == "none":
            return reward
        if x.group is None:
            raise ValueError("OfflinePG with baseline='group_mean' needs group ids (ObjectiveInputs.group)")
        _, idx = torch.unique(x.group, return_inverse=True)
        n = int(idx.max()) + 1
        total = reward.new_zeros(n).index_add_(0, idx, reward)
        count = reward.new_zeros(n).index_add_(0, idx, torch.ones_like(reward))
        return reward - (total / count)[idx]

    def weights(self, x: ObjectiveInputs) -> Tensor:
        """Clipped importance weights, [B, T] (token) or [B, 1] (sequence), without gradient."""
        log_ratio = (x.policy - self._require_reference(x)).detach() * x.mask
        if self.weighting == "sequence":
            log_ratio = log_ratio.sum(-1, keepdim=True)
        # Clip in log space: exp(min(Δ, log clip)) == min(exp(Δ), clip) and cannot overflow.
        return log_ratio.clamp(max=math.log(self.clip)).exp()

    def terms(self, x: ObjectiveInputs) -> Tensor:
        weighted = self.sequence(self.weights(x) * x.policy, x.mask)
        return -self.advantage(x) * weighted

    def metrics(self, x: ObjectiveInputs) -> dict[str, Tensor]:
        w = self.weights(x)
        mask = x.mask if self.weighting == "token" else torch.ones_like(w, dtype=torch.bool)
        return {"importance_weight": w[mask].mean(), "clipped_frac": (w[mask] >= self.clip * (1 - 1e-6)).float().mean()}
