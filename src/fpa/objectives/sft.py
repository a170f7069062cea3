"""SFT / RFT: negative log-likelihood of correct (or gold) completions, token-mean per sequence."""

from __future__ import annotations

from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs


class SFT(Objective):
    needs_reference = False
    data = "correct"

    def __init__(self, reduce: str = "mean") -> None:
        super().__init__(reduce)

    def terms(self, x: ObjectiveInputs) -> Tensor:
        return -self.sequence(x.policy, x.mask)
