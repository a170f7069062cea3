"""Future Policy Approximation as one wrapper around any objective.

Every objective's gradient is −Σ C_i ∇log π_θ(y_i). FPA evaluates the coefficients C at the
future policy π̂ = softmax((1+λ)h_θ − λh_ref) under stop-gradient and keeps the gradient path
through π_θ (arXiv 2509.19893). Generically: evaluate the objective at detached log-probs,
differentiate with respect to them to read off C, and form the surrogate −Σ sg[C]·log π_θ.
At λ = 0 the future policy is the current one and the gradient is the objective's own.

The future guard (``guard="future"``, pair objectives only; not in the paper): in the pairs where the
future policy predicts that the chosen completion falls below the reference (summed log π̂(y_w) <
log π_ref(y_w)), the rejected side's coefficient is set to 0, so those pairs only pull the chosen up.
``guard="current"`` is its ablation: the same gate with π_θ in place of π̂. To first order in the
policy's distance from the reference, log π̂(y) − log π_ref(y) = (1+λ)(log π_θ(y) − log π_ref(y)), so
the two gates agree; they differ only where the second-order (log-normaliser) terms flip the sign, and
at λ = 0 they are the same gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from numbers import Real

import torch
from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs, split_pairs

SIDES = ("both", "rejected", "chosen")
GUARDS = ("future", "current")  # or null: no guard


def token_coefficients(objective: Objective, x: ObjectiveInputs) -> tuple[Tensor, Tensor]:
    """C_t = −∂(Σ terms)/∂log π_t at the log-probs in ``x.policy`` (treated as a detached leaf).

    Returns (coefficients [B, T], terms) — terms are the per-term losses at that point.
    """
    leaf = x.policy.detach().requires_grad_(True)
    with torch.enable_grad():
        terms = objective.terms(replace(x, policy=leaf))
        (grad,) = torch.autograd.grad(terms.sum(), leaf, allow_unused=True)
    coef = torch.zeros_like(leaf) if grad is None else -grad
    return coef * x.mask, terms.detach()


def row_coefficients(coef: Tensor, mask: Tensor, reduce: str) -> Tensor:
    """[B] coefficient on each row's sequence log-prob (summed or length-normalised, per ``reduce``).

    For a summed sequence every token carries the same C, so C is the token mean; for a
    length-normalised one each token carries C/|y|, so C is the token sum.
    """
    total = coef.sum(-1)
    return total / mask.sum(-1) if reduce == "sum" else total


@dataclass
class FPAOutput:
    loss: Tensor  # value: the objective at the current policy; gradient: the FPA surrogate's
    coef_current: Tensor  # [B] per-row sequence coefficient at the current policy (+ chosen, − rejected)
    coef_future: Tensor | None  # [B] the same at the future policy (None without a reference)
    gated: Tensor | None = None  # [P] bool with a guard: pairs whose rejected coefficient was set to 0


@dataclass
class FuturePolicy:
    """``lam`` is λ ≥ 0; ``apply_to`` picks the rows whose coefficients come from the future policy;
    ``guard`` (null | future | current) zeroes the rejected coefficient of the pairs whose chosen
    completion is predicted (by π̂, or by π_θ for ``current``) to fall below the reference.

    λ > 0 needs the future policy's log-probs (``ObjectiveInputs.future``, computed from the
    reference model's logits); without them a call raises instead of quietly training the base
    objective. Bad values raise ``ValueError("<field>: ...")``; the config layer prefixes ``fpa.``.
    """

    lam: float = 0.0
    apply_to: str = "both"
    # Added after runs were made: left out of identities while null (fpa.config.keys / identity).
    guard: str | None = field(default=None, metadata={"identity": "omit_if_none"})

    def __post_init__(self) -> None:
        lam = self.lam
        if isinstance(lam, bool) or not isinstance(lam, Real) or not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam: must be a finite number >= 0 (0 is the base objective), got {lam!r}")
        if not isinstance(self.apply_to, str) or self.apply_to not in SIDES:
            raise ValueError(f"apply_to: must be one of {' | '.join(SIDES)}, got {self.apply_to!r}")
        if self.guard is not None and (not isinstance(self.guard, str) or self.guard not in GUARDS):
            hint = " (the gate at the future policy is spelled future)" if self.guard is True else ""
            raise ValueError(f"guard: must be null | {' | '.join(GUARDS)}{hint}, got {self.guard!r}")

    @property
    def enabled(self) -> bool:
        return self.lam > 0

    @property
    def needs_reference(self) -> bool:
        """Whether FPA itself needs the reference model: for λ > 0, and for either guard (the gate compares
        with log π_ref), so a guard on an objective without a reference (SimPER) loads one."""
        return self.enabled or self.guard is not None

    def gate(self, objective: Objective, x: ObjectiveInputs) -> Tensor:
        """[P] bool: the pairs whose chosen sequence log-prob, under π̂ (``future``) or π_θ (``current``),
        summed over tokens, is below the reference's."""
        if getattr(objective, "data", None) != "pairs":
            raise ValueError(f"guard: needs a pair objective; {type(objective).__name__} trains on "
                             f"{getattr(objective, 'data', '?')} rows")
        if x.reference is None:
            raise ValueError("guard: needs the reference log-probs (no reference model was loaded)")
        # At λ = 0 the future policy is the current one (the module then passes future = policy anyway).
        source = x.future if self.guard == "future" and x.future is not None else x.policy
        chosen, _ = split_pairs(((source.detach() - x.reference) * x.mask).sum(-1))
        return chosen < 0

    def rows(self, x: ObjectiveInputs) -> Tensor:
        """[B] bool: rows that take the future coefficient."""
        n = x.policy.shape[0]
        chosen = x.chosen if x.chosen is not None else torch.ones(n, dtype=torch.bool, device=x.policy.device)
        if self.apply_to == "both":
            return torch.ones_like(chosen)
        return chosen if self.apply_to == "chosen" else ~chosen

    def __call__(self, objective: Objective, x: ObjectiveInputs) -> FPAOutput:
        if self.enabled and x.future is None:
            raise ValueError(f"FPA (λ>0) needs the reference model's logits: lam={self.lam!r} but the batch has no "
                             "future-policy log-probs (no reference model was loaded); load one, or set lam=0 "
                             "for the base objective")
        coef_cur, terms = token_coefficients(objective, x)
        coef, coef_fut = coef_cur, None
        if x.future is not None and self.enabled:
            coef_fut, _ = token_coefficients(objective, x.at_future())
            coef = torch.where(self.rows(x)[:, None], coef_fut, coef_cur)
        elif x.future is not None:
            coef_fut = coef_cur  # λ = 0: the future policy is the current one
        gated = None
        if self.guard is not None:
            gated = self.gate(objective, x)
            rejected = torch.cat([torch.zeros_like(gated), gated])  # pair i is rows i and i + P
            coef = coef.masked_fill(rejected[:, None], 0.0)
        # d(terms.mean())/d log π = −C / n_terms, so this surrogate has the objective's gradient shape.
        surrogate = -(coef * x.policy).sum() / terms.numel()
        loss = surrogate - surrogate.detach() + terms.mean()
        reduce = getattr(objective, "reduce", "sum")
        return FPAOutput(loss=loss, coef_current=row_coefficients(coef_cur, x.mask, reduce),
                         coef_future=None if coef_fut is None else row_coefficients(coef_fut, x.mask, reduce),
                         gated=gated)
