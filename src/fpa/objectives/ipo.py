"""IPO (Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from Human
Preferences", eq. 17): the squared distance of the log-ratio margin to 1/(2β),

    L = (h − 1/(2β))²,  h = (lp_w − lr_w) − (lp_l − lr_l).

Log-probs are length-normalised by default (``reduce="mean"``) so that β does not have to scale
with completion length; TRL's ``loss_type="ipo"`` makes the same choice.
Gradient coefficient per pair: −2(h − 1/(2β)), +1 on chosen and −1 on rejected (÷|y| per token).
"""

from __future__ import annotations

from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs, split_pairs


class IPO(Objective):
    needs_reference = True
    data = "pairs"
    reference_on_served_rows = True  # the served pairs' tokens only

    def __init__(self, beta: float = 0.1, reduce: str = "mean") -> None:
        super().__init__(reduce)
        from fpa import checks

        checks.number("beta", beta, 0, strict=True)
        self.beta = beta

    def margin(self, x: ObjectiveInputs) -> Tensor:
        """h per pair: chosen log-ratio minus rejected log-ratio."""
        ratio = self.sequence(x.policy, x.mask) - self.sequence(self._require_reference(x), x.mask)
        chosen, rejected = split_pairs(ratio)
        return chosen - rejected

    def terms(self, x: ObjectiveInputs) -> Tensor:
        return (self.margin(x) - 1 / (2 * self.beta)) ** 2
