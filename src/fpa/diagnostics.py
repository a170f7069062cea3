"""Quantities the FPA paper's analysis rests on, computed from one batch (no gradient).

Sequence log-probs here are always summed, whatever the objective's reduction, so curves from
different objectives are comparable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fpa.fpa import FPAOutput
from fpa.objectives.base import ObjectiveInputs


def _mean(values: Tensor, rows: Tensor) -> Tensor | None:
    return values[rows].mean() if rows.any() else None


@torch.no_grad()
def batch_diagnostics(x: ObjectiveInputs, out: FPAOutput, kind: str, shared: Tensor | None = None
                      ) -> dict[str, Tensor]:
    chosen = x.chosen if x.chosen is not None else torch.ones(x.policy.shape[0], dtype=torch.bool,
                                                                device=x.policy.device)
    logp = (x.policy.detach() * x.mask).sum(-1)
    m: dict[str, Tensor | None] = {"logps/chosen": _mean(logp, chosen), "logps/rejected": _mean(logp, ~chosen),
                                   "coef/current/chosen": _mean(out.coef_current, chosen),
                                   "coef/current/rejected": _mean(out.coef_current, ~chosen)}
    if out.coef_future is not None:
        m["coef/future/chosen"] = _mean(out.coef_future, chosen)
        m["coef/future/rejected"] = _mean(out.coef_future, ~chosen)
    if x.reference is not None:
        # The policy starts as the reference, so log π − log π_ref is the change since the start.
        delta = logp - (x.reference * x.mask).sum(-1)
        m["logps/chosen_delta"] = _mean(delta, chosen)
        m["logps/rejected_delta"] = _mean(delta, ~chosen)
        if kind == "pairs":
            c, r = delta.chunk(2)
            m["rewards/margin"] = (c - r).mean()
            m["rewards/accuracy"] = (c > r).float().mean()
        elif m["logps/chosen_delta"] is not None and m["logps/rejected_delta"] is not None:
            m["rewards/margin"] = m["logps/chosen_delta"] - m["logps/rejected_delta"]
    if out.gated is not None:  # the future guard: share of pairs whose rejected coefficient was set to 0
        m["guard/gated_fraction"] = out.gated.float().mean()
    if shared is not None:
        prob = x.policy.detach().exp()
        for side, rows in (("chosen", chosen), ("rejected", ~chosen)):
            for name, tokens in (("shared", shared & x.mask), ("unshared", ~shared & x.mask)):
                sel = tokens & rows[:, None]
                if sel.any():
                    m[f"prob/{name}/{side}"] = prob[sel].mean()
    return {k: v for k, v in m.items() if v is not None}
