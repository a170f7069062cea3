"""SimPER (Xiao et al. 2025, "SimPER: A Minimalist Approach to Preference Alignment without
Hyperparameters"): raise the inverse perplexity of the chosen completion and lower that
of the rejected one,

    L = −exp(mean_t log π_θ(y_w)) + exp(mean_t log π_θ(y_l)).

No reference model in the loss (FPA still needs one for the future policy). Log-probs are ≤ 0,
so the exponentials lie in [0, 1] and cannot overflow.
Gradient coefficient: exp(mean lp_w)/|y_w| per chosen token, −exp(mean lp_l)/|y_l| per rejected.
"""

from __future__ import annotations

from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs, split_pairs


class SimPER(Objective):
    needs_reference = False
    data = "pairs"
    reference_on_served_rows = True  # it reads none; the future guard (λ = 0) reads the served pairs' tokens

    def __init__(self, reduce: str = "mean") -> None:
        super().__init__(reduce)

    def terms(self, x: ObjectiveInputs) -> Tensor:
        chosen, rejected = split_pairs(self.sequence(x.policy, x.mask).exp())
        return rejected - chosen
