"""FPA asked for but impossible, and λ / apply_to values that make no sense: a clear ValueError each."""

from __future__ import annotations

import math

import pytest
import torch

from fpa.fpa import FuturePolicy
from fpa.objectives import DPO, ObjectiveInputs


def _pairs(future: bool) -> ObjectiveInputs:
    g = torch.Generator().manual_seed(0)
    lp, lr, fut = (-torch.rand(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    return ObjectiveInputs(policy=lp.requires_grad_(), mask=torch.ones(4, 3, dtype=torch.bool), reference=lr,
                           future=fut if future else None, chosen=torch.arange(4) < 2)


def test_lambda_above_zero_without_future_logprobs_is_refused():
    with pytest.raises(ValueError, match=r"FPA \(λ>0\) needs the reference model's logits") as err:
        FuturePolicy(lam=1.0)(DPO(beta=0.1), _pairs(future=False))
    assert "\n" not in str(err.value) and "lam=1.0" in str(err.value)


def test_lambda_zero_without_future_is_the_base_objective():
    x = _pairs(future=False)
    out = FuturePolicy(lam=0.0)(DPO(beta=0.1), x)
    torch.testing.assert_close(out.loss, DPO(beta=0.1)(x))
    assert out.coef_future is None
    assert FuturePolicy(lam=1.0)(DPO(beta=0.1), _pairs(future=True)).coef_future is not None


@pytest.mark.parametrize("lam", [math.inf, -math.inf, math.nan])
def test_non_finite_lambda_is_refused(lam):
    with pytest.raises(ValueError) as err:
        FuturePolicy(lam=lam)
    assert str(err.value) == f"lam: must be a finite number >= 0 (0 is the base objective), got {lam}"


def test_negative_or_non_numeric_lambda_is_refused():
    with pytest.raises(ValueError, match=r"^lam: must be a finite number >= 0 \(0 is the base objective\), got -0.5$"):
        FuturePolicy(lam=-0.5)
    with pytest.raises(ValueError, match=r"^lam: must be a finite number >= 0 .*got 'big'$"):
        FuturePolicy(lam="big")
    with pytest.raises(ValueError, match=r"^lam: .*got True$"):
        FuturePolicy(lam=True)


def test_bad_apply_to_is_refused():
    with pytest.raises(ValueError) as err:
        FuturePolicy(apply_to="x")
    assert str(err.value) == "apply_to: must be one of both | rejected | chosen, got 'x'"
    for side in ("both", "rejected", "chosen"):
        assert FuturePolicy(lam=2, apply_to=side).apply_to == side
