"""The interface every offline objective implements: per-term losses from per-token log-probs.

An objective sees plain tensors (``ObjectiveInputs``) and returns a vector of per-term losses;
the loss is their mean. Nothing here knows about Lightning or models, so objectives can be used
in any training loop, as TRL's loss functions are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor


@dataclass
class ObjectiveInputs:
    """A batch of completions as per-token log-probs (zero where ``mask`` is False).

    Row layout depends on the objective's ``data`` kind: for ``pairs`` the first half of the
    rows are the chosen completions and the second half the rejected ones, pair i being rows
    i and i + B/2.
    """

    policy: Tensor  # [B, T] log π_θ(y_t | ...) — the only tensor gradients flow through
    mask: Tensor  # [B, T] bool, completion tokens
    reference: Tensor | None = None  # [B, T] log π_ref, no gradient
    future: Tensor | None = None  # [B, T] log π̂ of the future policy, no gradient
    chosen: Tensor | None = None  # [B] bool: desirable / correct rows
    reward: Tensor | None = None  # [B] verifiable reward
    group: Tensor | None = None  # [B] long: rows sharing a problem share an id
    kl: ObjectiveInputs | None = None  # KTO: mismatched (prompt, completion) rows, no gradient
    # [B, T] log-probs of the behaviour policy that sampled the completions (at temperature 1), no gradient.
    # None: not stored (offline data), read as the current policy, detached: the on-policy case.
    behaviour: Tensor | None = None

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            self.mask = self.mask.bool()
        empty = ~self.mask.any(-1)
        if empty.any():
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"ObjectiveInputs: rows {rows} have no completion token (all masked)")

    def behaviour_logprobs(self) -> Tensor:
        """The behaviour policy's log-probs: the stored ones, else the current policy's (detached)."""
        return self.policy.detach() if self.behaviour is None else self.behaviour

    def at_future(self) -> ObjectiveInputs:
        """The same batch with the policy's log-probs replaced by the future policy's.

        The behaviour policy stays what sampled the data: without stored log-probs that is the current
        policy, so it is pinned here before ``policy`` is swapped (a ratio π̂/π_θ, not π̂/π̂ = 1).
        """
        if self.future is None:
            raise ValueError("ObjectiveInputs.at_future: no future log-probs (no reference model loaded)")
        return replace(self, policy=self.future, kl=self.kl.at_future() if self.kl is not None else None,
                       behaviour=self.behaviour_logprobs())

    @classmethod
    def from_pairs(cls, chosen: Tensor, rejected: Tensor, ref_chosen: Tensor | None = None,
                   ref_rejected: Tensor | None = None, chosen_mask: Tensor | None = None,
                   rejected_mask: Tensor | None = None) -> ObjectiveInputs:
        """Pairs from [P] sequence log-probs or [P, T] token log-probs (masks default to all ones)."""
        def tokens(x: Tensor) -> Tensor:
            return x[:, None] if x.dim() == 1 else x

        c, r = tokens(chosen), tokens(rejected)
        width = max(c.shape[1], r.shape[1])

        def pad(x: Tensor | None) -> Tensor | None:
            return None if x is None else torch.nn.functional.pad(tokens(x), (0, width - tokens(x).shape[1]))

        cm = chosen_mask if chosen_mask is not None else torch.ones_like(c, dtype=torch.bool)
        rm = rejected_mask if rejected_mask is not None else torch.ones_like(r, dtype=torch.bool)
        ref = None if ref_chosen is None else torch.cat([pad(ref_chosen), pad(ref_rejected)])
        n = c.shape[0]
        return cls(policy=torch.cat([pad(c), pad(r)]), mask=torch.cat([pad(cm), pad(rm)]).bool(), reference=ref,
                   chosen=torch.arange(2 * n) < n)


class Objective:
    """Base class. Subclasses set the class attributes and implement ``terms``."""

    # The loss itself reads reference log-probs. Read from the instance: an objective may decide it from its
    # config (GRPO with beta=0 does not), by setting it in __init__.
    needs_reference: bool = True
    data: ClassVar[str] = "pairs"  # rows the DataModule serves: pairs | unpaired | groups | correct
    needs_kl_rows: ClassVar[bool] = False  # KTO's mismatched rows
    # The loss reads the reference only through the per-token log-probs of the rows the DataModule
    # serves (``x.reference``), so with FPA off they can be computed once before training
    # (``train.precompute_reference``). False by default: a new objective opts in after checking.
    reference_on_served_rows: ClassVar[bool] = False

    def __init__(self, reduce: str = "sum") -> None:
        from fpa import checks

        checks.choice("reduce", reduce, ("sum", "mean"))
        self.reduce = reduce

    def sequence(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Summed or length-normalised sequence log-prob, per this objective's config."""
        total = (tokens * mask).sum(-1)
        return total if self.reduce == "sum" else total / mask.sum(-1)

    def terms(self, x: ObjectiveInputs) -> Tensor:
        raise NotImplementedError

    def metrics(self, x: ObjectiveInputs) -> dict[str, Tensor]:
        """Objective-specific diagnostics (no gradient). Shared ones are computed by the caller."""
        return {}

    def __call__(self, x: ObjectiveInputs) -> Tensor:
        return self.terms(x).mean()

    def _require_reference(self, x: ObjectiveInputs) -> Tensor:
        if x.reference is None:
            raise ValueError(f"{type(self).__name__} needs reference log-probs (ObjectiveInputs.reference)")
        return x.reference


def split_pairs(values: Tensor) -> tuple[Tensor, Tensor]:
    """Rows [2P, ...] in pair layout → (chosen [P, ...], rejected [P, ...])."""
    if values.shape[0] % 2:
        raise ValueError(f"pair layout needs an even number of rows, got {values.shape[0]}")
    return values.chunk(2)
