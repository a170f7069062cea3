"""DPO (Rafailov et al. 2023, eq. 7): −log σ(β[(lp_w − lr_w) − (lp_l − lr_l)]).

Gradient coefficient per pair: β·σ(−margin), applied +1 to the chosen and −1 to the rejected
sequence log-prob.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs, split_pairs


class DPO(Objective):
    needs_reference = True
    data = "pairs"
    reference_on_served_rows = True  # the served pairs' tokens only

    def __init__(self, beta: float = 0.1, reduce: str = "sum") -> None:
        from fpa import checks

        super().__init__(reduce)
        checks.number("beta", beta, 0, strict=True)
        self.beta = beta

    def logits(self, x: ObjectiveInputs) -> Tensor:
        """β × margin, per pair."""
        ratio = self.sequence(x.policy, x.mask) - self.sequence(self._require_reference(x), x.mask)
        chosen, rejected = split_pairs(ratio)
        return self.beta * (chosen - rejected)

    def terms(self, x: ObjectiveInputs) -> Tensor:
        return -F.logsigmoid(self.logits(x))
