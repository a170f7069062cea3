"""FPA on DPO: hand-computed values, λ = 0 invariance, and λ > 0 against softmax((1+λ)h − λh_ref)."""

import math

import torch

from fpa.fpa import FuturePolicy
from fpa.objectives import DPO, ObjectiveInputs


def test_dpo_loss_hand_computed():
    # margin = (−5 − −6) − (−8 − −7) = 1 − (−1) = 2; β = 0.5 → loss = −log σ(1) = log(1 + e^−1)
    x = ObjectiveInputs.from_pairs(torch.tensor([-5.0]), torch.tensor([-8.0]), torch.tensor([-6.0]),
                                   torch.tensor([-7.0]))
    assert math.isclose(DPO(beta=0.5)(x).item(), math.log(1 + math.exp(-1)), rel_tol=1e-6)


def _random_pairs(p=4, t=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(2 * p, t, generator=g, dtype=dtype) * 3
    lr = -torch.rand(2 * p, t, generator=g, dtype=dtype) * 3
    fut = -torch.rand(2 * p, t, generator=g, dtype=dtype) * 3
    mask = torch.rand(2 * p, t, generator=g) > 0.2
    mask[:, 0] = True
    return lp, lr, fut, mask


def test_lambda_zero_gives_dpo_gradient_exactly():
    lp, lr, _, mask = _random_pairs()
    chosen = torch.arange(8) < 4
    a = lp.clone().requires_grad_(True)
    DPO(beta=0.3)(ObjectiveInputs(policy=a, mask=mask, reference=lr, chosen=chosen)).backward()
    b = lp.clone().requires_grad_(True)
    out = FuturePolicy(lam=0.0)(DPO(beta=0.3), ObjectiveInputs(policy=b, mask=mask, reference=lr, future=b.detach(),
                                                                 chosen=chosen))
    out.loss.backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-15)


def test_future_coefficient_from_logits():
    """C = β·σ(−β·margin under π̂), π̂ from (1+λ)h_θ − λh_ref, computed here independently of fpa.logprobs."""
    torch.manual_seed(3)
    p, t, v, lam, beta = 3, 5, 13, 2.0, 0.2
    h = torch.randn(2 * p, t, v, dtype=torch.float64)
    h_ref = torch.randn(2 * p, t, v, dtype=torch.float64)
    y = torch.randint(0, v, (2 * p, t))
    mask = torch.ones(2 * p, t, dtype=torch.bool)

    def tok_logp(logits):
        return torch.log_softmax(logits, -1).gather(2, y[..., None]).squeeze(2)

    lp, lr, fut = tok_logp(h), tok_logp(h_ref), tok_logp((1 + lam) * h - lam * h_ref)
    for apply_to in ("both", "rejected", "chosen"):
        policy = lp.clone().requires_grad_(True)
        out = FuturePolicy(lam=lam, apply_to=apply_to)(
            DPO(beta=beta), ObjectiveInputs(policy=policy, mask=mask, reference=lr, future=fut,
                                            chosen=torch.arange(2 * p) < p))
        out.loss.backward()
        def margin(a):
            s = (a - lr).sum(-1)
            return s[:p] - s[p:]
        c_future = beta * torch.sigmoid(-beta * margin(fut))
        c_current = beta * torch.sigmoid(-beta * margin(lp))
        c_chosen = c_future if apply_to in ("both", "chosen") else c_current
        c_rejected = c_future if apply_to in ("both", "rejected") else c_current
        # loss = mean over pairs → d/d lp_t = −C/p for chosen tokens, +C/p for rejected tokens.
        expect = torch.cat([-c_chosen[:, None].expand(p, t), c_rejected[:, None].expand(p, t)]) / p
        torch.testing.assert_close(policy.grad, expect, rtol=0, atol=1e-14)
        torch.testing.assert_close(out.coef_future[:p], c_future, rtol=0, atol=1e-14)
        torch.testing.assert_close(out.coef_current[p:], -c_current, rtol=0, atol=1e-14)
        # The loss value stays the objective at the current policy.
        torch.testing.assert_close(out.loss.detach(), -torch.nn.functional.logsigmoid(beta * margin(lp)).mean())
