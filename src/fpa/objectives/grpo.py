"""GRPO (Shao et al. 2024, DeepSeekMath §4.1) with the Dr. GRPO (Liu et al. 2025) and DAPO (Yu et al. 2025)
variants: a PPO-style clipped surrogate on group-normalised advantages, optionally with a k3 KL penalty.

For rows i of one problem's group (same ``group`` id), with verifiable rewards r_i:

    A_i   = (r_i − mean_group r) / (std_group r + eps)      scale_rewards=group (GRPO)
          = (r_i − mean_group r) / (std_batch r + eps)      scale_rewards=batch
          =  r_i − mean_group r                             scale_rewards=none  (Dr. GRPO)

(std with Bessel's correction; 0 for a group of one row.) Per completion token t, with ρ_t = π_θ(y_t)/μ(y_t)
the ratio to the behaviour policy μ that sampled the completion:

    ℓ_t = −min(ρ_t A_i, clip(ρ_t, 1 − epsilon_low, 1 + epsilon_high) A_i) + β · [ρ_t ·] k3_t,
    k3_t = exp(lr_t − lp_t) − (lr_t − lp_t) − 1             (Schulman's unbiased, non-negative KL estimator)

The KL term is weighted by the (unclipped, differentiable) ratio ρ_t when ``kl_bias_correction`` (TRL's
``use_bias_correction_kl``, its default, after DeepSeek-V3.2): its gradient is then the unbiased gradient of
KL(π_θ ‖ π_ref) under samples from μ, also on-policy where ρ_t = 1 in value but not in derivative.

and the batch loss aggregates ℓ over completion tokens by ``loss_type``:

    grpo     mean over each sequence's tokens, then mean over sequences
    dapo     mean over every completion token of the batch (long completions weigh more)
    dr_grpo  sum over the batch / (B · max_completion_length), a constant normaliser

The behaviour log-probs are ``ObjectiveInputs.behaviour``. Offline data without stored ones is read as
sampled by the current policy (the detached π_θ, ratio 1: the on-policy case, where only A_i and the KL
term shape the gradient). Under FPA the loss is evaluated at the future policy π̂ against the same
behaviour log-probs (ρ = π̂/μ; π̂/π_θ when none are stored, see ``ObjectiveInputs.at_future``), so the
future policy decides which tokens are clipped.

Under data parallelism ``dapo``'s token count and ``scale_rewards=batch``'s std are over the global batch
(every rank's rows, as TRL's), so the ranks' averaged gradient is that of the global batch's loss; with
gradient accumulation they are per micro-batch (TRL's span the accumulation window). Groups are whole
within a micro-batch (one example per problem), so group statistics are local. Several optimizer steps per
rollout batch (TRL's ``num_iterations``) belong to the training loop, not to this loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALES = ("group", "batch", "none")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_sum(values: Tensor) -> Tensor:
    """``values`` summed over every data-parallel rank (these values when not distributed); no gradient."""
    values = values.detach().clone()
    if _distributed():
        dist.all_reduce(values)
    return values


class GRPO(Objective):
    data = "groups"
    reference_on_served_rows = True  # the k3 KL term (beta > 0) reads the served rows' tokens only

    def __init__(self, beta: float = 0.0, epsilon_low: float = 0.2, epsilon_high: float | None = None,
                 loss_type: str = "grpo", scale_rewards: str = "group", max_completion_length: int | None = None,
                 eps: float = 1e-4, kl_bias_correction: bool = True) -> None:
        from fpa import checks

        # ``reduce`` only shapes FPA's per-row diagnostics: per-sequence token means for grpo, sums otherwise.
        super().__init__("mean" if loss_type == "grpo" else "sum")
        checks.choice("loss_type", loss_type, LOSS_TYPES)
        checks.choice("scale_rewards", scale_rewards, SCALES)
        checks.number("beta", beta, 0)
        checks.number("epsilon_low", epsilon_low, 0, 1)
        checks.number("epsilon_high", epsilon_high, 0, optional=True)
        checks.number("eps", eps, 0)
        checks.flag("kl_bias_correction", kl_bias_correction)
        checks.number("max_completion_length", max_completion_length, 1, integer=True, optional=True)
        if loss_type == "dr_grpo" and max_completion_length is None:
            raise ValueError("max_completion_length: required with loss_type=dr_grpo (its constant normaliser; "
                             "the generation budget, generate.max_new_tokens)")
        self.beta, self.loss_type, self.scale_rewards, self.eps = float(beta), loss_type, scale_rewards, float(eps)
        self.epsilon_low = float(epsilon_low)
        self.epsilon_high = self.epsilon_low if epsilon_high is None else float(epsilon_high)
        self.max_completion_length, self.kl_bias_correction = max_completion_length, kl_bias_correction
        self.needs_reference = self.beta > 0  # only the KL term reads the reference

    def advantage(self, x: ObjectiveInputs) -> Tensor:
        """[B] reward minus its group's mean, divided by the group's (or batch's) std + eps unless scale_rewards=none."""
        if x.reward is None or x.group is None:
            raise ValueError("GRPO needs rewards and group ids (ObjectiveInputs.reward, ObjectiveInputs.group)")
        reward = x.reward.to(x.policy.dtype)
        _, idx = torch.unique(x.group, return_inverse=True)
        n = int(idx.max()) + 1

        def per_group(values: Tensor) -> Tensor:
            return reward.new_zeros(n).index_add_(0, idx, values)

        count = per_group(torch.ones_like(reward))
        centred = reward - (per_group(reward) / count)[idx]
        if self.scale_rewards == "none":
            return centred
        if self.scale_rewards == "group":
            # Unbiased variance; a one-row group has no spread (its centred reward is 0 anyway).
            var = per_group(centred ** 2) / (count - 1).clamp(min=1)
            std = var.sqrt()[idx]
        else:  # over the global batch's rewards, unbiased
            total, squares, rows = global_sum(torch.stack([reward.sum(), (reward ** 2).sum(),
                                                           reward.new_tensor(float(reward.numel()))]))
            var = (squares - total ** 2 / rows) / (rows - 1) if rows > 1 else reward.new_zeros(())
            std = var.clamp(min=0).sqrt()
        return centred / (std + self.eps)

    def token_losses(self, x: ObjectiveInputs) -> Tensor:
        """[B, T] ℓ_t on completion tokens, 0 elsewhere."""
        adv = self.advantage(x)[:, None]
        ratio = torch.exp(x.policy - x.behaviour_logprobs().detach())
        clipped = ratio.clamp(1 - self.epsilon_low, 1 + self.epsilon_high)
        loss = -torch.minimum(ratio * adv, clipped * adv)
        if self.beta > 0:
            d = self._require_reference(x) - x.policy
            k3 = torch.exp(d) - d - 1
            loss = loss + self.beta * (k3 * ratio if self.kl_bias_correction else k3)
        return loss * x.mask

    def terms(self, x: ObjectiveInputs) -> Tensor:
        """[B] per-row losses whose mean is the aggregated batch loss."""
        per_row = self.token_losses(x).sum(-1)
        if self.loss_type == "grpo":
            return per_row / x.mask.sum(-1)
        if self.loss_type == "dapo":  # Σ tokens' ℓ / (global token count / ranks): DDP's mean gives the global one
            tokens = global_sum(x.mask.sum().to(per_row.dtype))
            world = dist.get_world_size() if _distributed() else 1
            return per_row * x.mask.shape[0] * world / tokens
        return per_row / self.max_completion_length

    @torch.no_grad()
    def metrics(self, x: ObjectiveInputs) -> dict[str, Tensor]:
        adv = self.advantage(x)[:, None].expand_as(x.policy)[x.mask]
        ratio = torch.exp(x.policy - x.behaviour_logprobs())[x.mask]
        low = (ratio < 1 - self.epsilon_low) & (adv < 0)
        high = (ratio > 1 + self.epsilon_high) & (adv > 0)
        out = {"importance_weight": ratio.mean(), "clipped_frac": (low | high).float().mean(),
               "clipped_frac_low": low.float().mean(), "clipped_frac_high": high.float().mean()}
        if self.beta > 0:  # the estimate the loss uses: k3, weighted by the ratio with kl_bias_correction
            d = (self._require_reference(x) - x.policy)[x.mask]
            k3 = torch.exp(d) - d - 1
            out["kl"] = (k3 * ratio if self.kl_bias_correction else k3).mean()
        return out
