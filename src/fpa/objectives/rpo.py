"""RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization"): DPO plus an NLL
term on the chosen completion,

    L = −log σ(β[(lp_w − lr_w) − (lp_l − lr_l)]) − α · log π_θ(y_w|x) / |y_w|.

The NLL is length-normalised per sequence (token mean over y_w), as in the paper. Its gradient
coefficient is the constant α/|y_w| on chosen tokens, so FPA only changes the DPO part.
"""

from __future__ import annotations

from torch import Tensor

from fpa.objectives.base import ObjectiveInputs, split_pairs
from fpa.objectives.dpo import DPO


class RPO(DPO):
    needs_reference = True
    data = "pairs"
    reference_on_served_rows = True  # the served pairs' tokens only

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, reduce: str = "sum") -> None:
        from fpa import checks

        super().__init__(beta=beta, reduce=reduce)
        checks.number("alpha", alpha, 0)
        self.alpha = alpha

    def terms(self, x: ObjectiveInputs) -> Tensor:
        # Token-mean NLL regardless of ``reduce``: ``reduce`` only shapes the DPO log-ratios.
        nll = -(x.policy * x.mask).sum(-1) / x.mask.sum(-1)
        chosen_nll, _ = split_pairs(nll)
        return super().terms(x) + self.alpha * chosen_nll
