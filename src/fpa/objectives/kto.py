"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", eq. 7).

With r = lp − lr (log-ratio of one completion) and a reference point z,

    desirable:    λ_D · (1 − σ(β(r − z)))
    undesirable:  λ_U · (1 − σ(β(z − r)))

z estimates KL(π_θ ‖ π_ref) from mismatched (prompt, completion) rows (``x.kl``): the batch mean
of their log-ratios, detached and clamped at 0, as in the paper. Under data parallelism the mean is
over the global batch (every rank's rows), so all ranks share one z.
Gradient coefficient: λ_D·β·σ'(β(r − z)) for desirable rows, −λ_U·β·σ'(β(z − r)) for undesirable.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from fpa.objectives.base import Objective, ObjectiveInputs


def global_mean(values: Tensor) -> Tensor:
    """Mean over every data-parallel rank's values (this rank's mean when not distributed)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values.mean()
    stats = torch.stack([values.sum(), torch.tensor(float(values.numel()), dtype=values.dtype,
                                                    device=values.device)])
    dist.all_reduce(stats)
    return stats[0] / stats[1]


class KTO(Objective):
    needs_reference = True
    data = "unpaired"
    needs_kl_rows = True
    reference_on_served_rows = False  # z reads the reference on mismatched KL rows built per batch

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
                 reduce: str = "sum") -> None:
        from fpa import checks

        super().__init__(reduce)
        checks.number("beta", beta, 0, strict=True)
        checks.number("desirable_weight", desirable_weight, 0)
        checks.number("undesirable_weight", undesirable_weight, 0)
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight

    def reference_point(self, x: ObjectiveInputs) -> Tensor:
        """z = max(0, mean log-ratio of the mismatched rows), without gradient."""
        if x.kl is None:
            raise ValueError("KTO needs mismatched KL rows (ObjectiveInputs.kl) to estimate its reference point z")
        kl = x.kl
        ratio = self.sequence(kl.policy, kl.mask) - self.sequence(self._require_reference(kl), kl.mask)
        return global_mean(ratio.detach()).clamp(min=0)

    def terms(self, x: ObjectiveInputs) -> Tensor:
        if x.chosen is None:
            raise ValueError("KTO needs desirable/undesirable labels (ObjectiveInputs.chosen)")
        r = self.sequence(x.policy, x.mask) - self.sequence(self._require_reference(x), x.mask)
        z = self.reference_point(x)
        desirable = self.desirable_weight * (1 - torch.sigmoid(self.beta * (r - z)))
        undesirable = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (z - r)))
        return torch.where(x.chosen, desirable, undesirable)

    def metrics(self, x: ObjectiveInputs) -> dict[str, Tensor]:
        return {"kl": self.reference_point(x)}
