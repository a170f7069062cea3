"""Objectives and FPA: every config in conf/objective/ is instantiated and checked against autograd,
finite differences, closed-form gradient coefficients and hand-computed values (float64)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fpa.fpa import FuturePolicy
from fpa.objectives import DPO, GRPO, IPO, KTO, RPO, SFT, Objective, ObjectiveInputs, OfflinePG, SimPER

CONF = Path(__file__).resolve().parents[1] / "conf" / "objective"
# Non-default options worth exercising on top of the shipped configs (only if that config exists).
VARIANTS = {
    "dpo": [{"reduce": "mean"}],
    "kto": [{"beta": 0.7, "desirable_weight": 1.5, "undesirable_weight": 0.5}],
    "offline_pg": [{"weighting": "sequence"}, {"reduce": "mean", "baseline": "none", "clip": 1.5}],
    "simper": [{"reduce": "sum"}],
    "grpo": [{"beta": 0.3, "loss_type": "dapo", "epsilon_high": 0.28},
             {"beta": 0.1, "loss_type": "dr_grpo", "scale_rewards": "none", "max_completion_length": 7},
             {"scale_rewards": "batch", "epsilon_low": 0.1},
             {"beta": 0.2, "kl_bias_correction": False}],
}
CASES = []
for _path in sorted(CONF.glob("*.yaml")):
    CASES.append(pytest.param((_path, {}), id=_path.stem))
    for _v in VARIANTS.get(_path.stem, []):
        CASES.append(pytest.param((_path, _v), id=f"{_path.stem}[{','.join(f'{k}={v}' for k, v in _v.items())}]"))


@pytest.fixture(params=CASES)
def objective(request) -> Objective:
    path, overrides = request.param
    return instantiate(OmegaConf.merge(OmegaConf.load(path), overrides))


def test_configs_discovered():
    assert {"dpo", "rpo", "ipo", "kto", "simper", "offline_pg", "sft", "rft"} <= {p.stem for p in CONF.glob("*.yaml")}


def test_config_instantiates(objective):
    assert isinstance(objective, Objective)
    assert objective.data in ("pairs", "unpaired", "groups", "correct")


# --------------------------------------------------------------------------- random inputs

def _logprobs(g: torch.Generator, shape, dtype=torch.float64) -> torch.Tensor:
    return -(torch.rand(shape, generator=g, dtype=dtype) * 3 + 0.05)


def _mask(g: torch.Generator, rows: int, T: int) -> torch.Tensor:
    lengths = torch.randint(1, T + 1, (rows,), generator=g)
    lengths[0] = T
    return torch.arange(T) < lengths[:, None]


def make_inputs(obj: Objective, rows: int = 6, T: int = 5, seed: int = 0, empty_row: int | None = None,
                kl_empty_row: int | None = None) -> ObjectiveInputs:
    """Random float64 inputs shaped for ``obj.data``; ``x.policy`` is a leaf requiring grad."""
    g = torch.Generator().manual_seed(seed)
    mask = _mask(g, rows, T)
    if empty_row is not None:
        mask[empty_row] = False
    policy, reference, future = (_logprobs(g, (rows, T)) * mask for _ in range(3))
    kw: dict = {}
    if obj.data == "pairs":
        kw["chosen"] = torch.arange(rows) < rows // 2
    elif obj.data == "unpaired":
        kw["chosen"] = torch.rand(rows, generator=g) < 0.5
        kw["chosen"][:2] = torch.tensor([True, False])  # both kinds present
    elif obj.data == "groups":
        kw["group"] = torch.arange(rows) // 3
        kw["reward"] = torch.randint(0, 2, (rows,), generator=g).double()
        kw["chosen"] = kw["reward"] > 0
    else:
        kw["chosen"] = torch.ones(rows, dtype=torch.bool)
    if obj.needs_kl_rows:
        kl_mask = _mask(g, rows, T)
        if kl_empty_row is not None:
            kl_mask[kl_empty_row] = False
        kl_ref = _logprobs(g, (rows, T)) * kl_mask
        # Policy a little above the reference on average, so that z > 0 is exercised.
        kl_pol, kl_fut = ((kl_ref + 0.4 * torch.rand(rows, T, generator=g, dtype=torch.float64)) * kl_mask
                          for _ in range(2))
        kw["kl"] = ObjectiveInputs(policy=kl_pol, mask=kl_mask, reference=kl_ref, future=kl_fut)
    if obj.data == "groups":  # behaviour log-probs near the policy: ratios both inside and outside the clip range
        kw["behaviour"] = (policy + 0.3 * torch.randn(rows, T, generator=g, dtype=policy.dtype)) * mask
    return ObjectiveInputs(policy=policy.requires_grad_(), mask=mask, reference=reference, future=future, **kw)


def grad(loss: torch.Tensor, x: ObjectiveInputs) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x.policy)
    return g


# --------------------------------------------------------------------------- autograd, FD, edge cases

def test_fpa_lam0_equals_objective_gradient(objective):
    x = make_inputs(objective)
    out = FuturePolicy(lam=0.0)(objective, x)
    assert torch.allclose(out.loss, objective(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad(out.loss, x), grad(objective(x), x), rtol=0, atol=1e-12)


def test_gradient_matches_finite_differences(objective):
    x = make_inputs(objective, seed=1)
    analytic = grad(objective(x), x)
    # A surrogate with stop-gradient importance ratios π/π_ref: moving the reference with the policy
    # holds the ratios fixed, which is exactly what stop-gradient means.
    move_ref = getattr(objective, "value_is_surrogate", False)
    p, eps = x.policy.detach(), 1e-6
    numeric = torch.zeros_like(p)
    for i in range(p.shape[0]):
        for t in range(p.shape[1]):
            d = torch.zeros_like(p)
            d[i, t] = eps
            f = [objective(replace(x, policy=p + s * d, reference=x.reference + s * d if move_ref else x.reference))
                 for s in (1, -1)]
            numeric[i, t] = (f[0] - f[1]) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-8)


def _assert_finite(objective, x, lam=1.5):
    loss = objective(x)
    assert torch.isfinite(loss), loss
    assert torch.isfinite(grad(loss, x)).all()
    out = FuturePolicy(lam=lam)(objective, x)
    assert torch.isfinite(out.loss) and torch.isfinite(grad(out.loss, x)).all()


def test_identical_rows_finite(objective):
    """chosen == rejected (and every other row the same completion)."""
    x = make_inputs(objective, seed=2)
    same = {k: getattr(x, k).detach()[:1].expand_as(getattr(x, k)).clone()
            for k in ("policy", "reference", "future", "mask")}
    same["policy"].requires_grad_()
    _assert_finite(objective, replace(x, **same))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shift", [1.0, -1.0])
def test_long_sequences_finite(objective, dtype, shift):
    """T = 4096 tokens of log-prob ≈ −5; the reference 1 nat/token above or below (Σ ratios ≈ ±4096)."""
    T = 4096
    x = make_inputs(objective, rows=6, T=T, seed=3)
    g = torch.Generator().manual_seed(0)

    def rows(like: ObjectiveInputs) -> dict:
        m = torch.ones_like(like.mask)
        m[-1, T // 2:] = False  # one shorter row
        lp = (-5 + 0.1 * torch.randn(m.shape, generator=g, dtype=torch.float64)).to(dtype) * m
        return dict(policy=lp, mask=m, reference=(lp + shift) * m, future=(lp - 0.5 * shift) * m)

    kl = None if x.kl is None else replace(x.kl, **rows(x.kl))
    new = rows(x)
    new["policy"].requires_grad_()
    _assert_finite(objective, replace(x, **new, kl=kl))


def test_all_masked_row_raises(objective):
    with pytest.raises(ValueError, match="no completion token"):
        make_inputs(objective, empty_row=1)
    if objective.needs_kl_rows:
        with pytest.raises(ValueError, match="no completion token"):
            make_inputs(objective, kl_empty_row=2)


def test_kto_without_kl_rows_raises():
    x = replace(make_inputs(KTO()), kl=None)
    with pytest.raises(ValueError, match="KL rows"):
        KTO()(x)


@pytest.mark.parametrize("kw, match", [({"weighting": "tokens"}, "weighting"), ({"clip": 0.0}, "clip"),
                                       ({"baseline": "batch"}, "baseline"), ({"reduce": "max"}, "reduce")])
def test_offline_pg_validates_args(kw, match):
    with pytest.raises(ValueError, match=match):
        OfflinePG(**kw)


# --------------------------------------------------------------------------- closed-form coefficients
# C_t = −∂(Σ terms)/∂lp_t, written out by hand from each paper's gradient, independently of the code.

def _norm(o, mask):
    """∂ seq(lp)/∂ lp_t: 1 (sum) or 1/|y| (mean) on completion tokens."""
    m = mask.double()
    return m if o.reduce == "sum" else m / m.sum(-1, keepdim=True)


def _seq(o, v, mask):
    return (v * _norm(o, mask)).sum(-1)


def _pair_coef(o, x, c):
    return torch.cat([c, -c])[:, None] * _norm(o, x.mask)


def coef_dpo(o, x):
    r = _seq(o, x.policy.detach() - x.reference, x.mask)
    P = len(r) // 2
    return _pair_coef(o, x, o.beta * torch.sigmoid(-o.beta * (r[:P] - r[P:])))


def coef_rpo(o, x):
    c = coef_dpo(o, x)
    m = x.mask.double()
    P = len(c) // 2
    c[:P] += o.alpha * m[:P] / m[:P].sum(-1, keepdim=True)
    return c


def coef_ipo(o, x):
    r = _seq(o, x.policy.detach() - x.reference, x.mask)
    P = len(r) // 2
    return _pair_coef(o, x, -2 * (r[:P] - r[P:] - 1 / (2 * o.beta)))


def coef_kto(o, x):
    r = _seq(o, x.policy.detach() - x.reference, x.mask)
    z = max(_seq(o, x.kl.policy - x.kl.reference, x.kl.mask).mean().item(), 0.0)
    sd, su = torch.sigmoid(o.beta * (r - z)), torch.sigmoid(o.beta * (z - r))
    desirable = o.desirable_weight * o.beta * sd * (1 - sd)
    undesirable = -o.undesirable_weight * o.beta * su * (1 - su)
    c = torch.where(x.chosen, desirable, undesirable)
    return c[:, None] * _norm(o, x.mask)


def coef_simper(o, x):
    e = _seq(o, x.policy.detach(), x.mask).exp()
    P = len(e) // 2
    return torch.cat([e[:P], -e[P:]])[:, None] * _norm(o, x.mask)


def coef_offline_pg(o, x):
    reward = x.reward.double()
    adv = reward.clone()
    if o.baseline == "group_mean":
        for gid in x.group.unique():
            rows = x.group == gid
            adv[rows] = reward[rows] - reward[rows].mean()
    log_ratio = (x.policy.detach() - x.reference) * x.mask
    if o.weighting == "sequence":
        log_ratio = log_ratio.sum(-1, keepdim=True)
    w = torch.minimum(log_ratio.exp(), torch.tensor(o.clip, dtype=torch.float64))
    return adv[:, None] * w * _norm(o, x.mask)


def coef_grpo(o, x):
    """−∂ℓ_t/∂lp_t: A·ρ where the unclipped branch is the minimum (A > 0: ρ ≤ 1+ε_high; A < 0: ρ ≥ 1−ε_low),
    else 0; plus the KL term's; times the aggregation's weight per token."""
    reward = x.reward.double()
    adv = torch.zeros_like(reward)
    for gid in x.group.unique():
        rows = x.group == gid
        r = reward[rows]
        centred = r - r.mean()
        if o.scale_rewards == "group":
            centred = centred / ((r.std() if len(r) > 1 else 0.0) + o.eps)
        adv[rows] = centred
    if o.scale_rewards == "batch":
        adv = adv / (reward.std() + o.eps)
    lp = x.policy.detach()
    old = lp if x.behaviour is None else x.behaviour
    rho = (lp - old).exp()
    a = adv[:, None]
    active = ((a > 0) & (rho <= 1 + o.epsilon_high)) | ((a < 0) & (rho >= 1 - o.epsilon_low))
    c = torch.where(active, a * rho, torch.zeros_like(rho))
    if o.beta > 0:  # d/dlp of k3 = 1 − exp(lr − lp); of ρ·k3 = ρ(k3 + 1 − exp(lr − lp)) = −ρ(lr − lp)
        c = c + o.beta * (rho * (x.reference - lp) if o.kl_bias_correction else (x.reference - lp).exp() - 1)
    m = x.mask.double()
    weight = {"grpo": m / m.sum(-1, keepdim=True), "dapo": m * len(m) / m.sum(),
              "dr_grpo": m / (o.max_completion_length or 1)}[o.loss_type]
    return c * weight


def coef_sft(o, x):
    return _norm(o, x.mask)


COEFFICIENTS = {DPO: coef_dpo, RPO: coef_rpo, IPO: coef_ipo, KTO: coef_kto, SimPER: coef_simper,
                OfflinePG: coef_offline_pg, SFT: coef_sft, GRPO: coef_grpo}


def closed_form(o, x):
    assert type(o) in COEFFICIENTS, f"add the closed-form gradient coefficient of {type(o).__name__} to COEFFICIENTS"
    return COEFFICIENTS[type(o)](o, x)


def test_coefficients_closed_form(objective):
    """Sanity of the hand formulas themselves: −n·∂L/∂lp at the current policy."""
    x = make_inputs(objective, seed=4)
    n = objective.terms(x).numel()
    torch.testing.assert_close(-n * grad(objective(x), x), closed_form(objective, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_fpa_uses_future_coefficients(objective, lam):
    x = make_inputs(objective, seed=5)
    n = objective.terms(x).numel()
    out = FuturePolicy(lam=lam)(objective, x)
    fut, cur = closed_form(objective, x.at_future()), closed_form(objective, x)
    g_fpa = grad(out.loss, x)
    torch.testing.assert_close(-n * g_fpa, fut, rtol=1e-10, atol=1e-12)
    # Row coefficients are on the sequence log-prob: token mean for summed, token sum for normalised.
    per_row = (lambda c: c.sum(-1) / x.mask.sum(-1)) if objective.reduce == "sum" else (lambda c: c.sum(-1))
    torch.testing.assert_close(out.coef_future, per_row(fut), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.coef_current, per_row(cur), rtol=1e-10, atol=1e-12)
    # The value stays the objective's own at the current policy.
    torch.testing.assert_close(out.loss, objective(x), rtol=0, atol=1e-12)
    # Same thing by plain autograd of the objective evaluated at the future log-probs.
    leaf = x.future.clone().requires_grad_()
    (g_future,) = torch.autograd.grad(objective(replace(x.at_future(), policy=leaf)), leaf)
    torch.testing.assert_close(g_fpa, g_future, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("side", ["rejected", "chosen"])
def test_fpa_apply_to_one_side(objective, side):
    x = make_inputs(objective, seed=6)
    n = objective.terms(x).numel()
    out = FuturePolicy(lam=1.0, apply_to=side)(objective, x)
    rows = ~x.chosen if side == "rejected" else x.chosen
    expected = torch.where(rows[:, None], closed_form(objective, x.at_future()), closed_form(objective, x))
    torch.testing.assert_close(-n * grad(out.loss, x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.8])
def test_fpa_dpo_from_logits(lam):
    """From logits: π̂ = softmax((1+λ)h − λh_ref); gradient −Σ sg[βσ(−m̂)]∇(lp_w − lp_l)/P."""
    g = torch.Generator().manual_seed(7)
    B, T, V, beta = 6, 5, 11, 0.3
    h = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    h_ref = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (B, T, 1), generator=g)
    mask = _mask(g, B, T)

    def token_lp(logits):
        return F.log_softmax(logits, -1).gather(-1, y).squeeze(-1) * mask

    lp, lr = token_lp(h), token_lp(h_ref)
    lf = token_lp((1 + lam) * h.detach() - lam * h_ref)
    x = ObjectiveInputs(policy=lp, mask=mask, reference=lr, future=lf, chosen=torch.arange(B) < B // 2)
    (g_fpa,) = torch.autograd.grad(FuturePolicy(lam=lam)(DPO(beta), x).loss, h, retain_graph=True)

    P = B // 2
    s_lp, s_lr, s_lf = lp.sum(-1), lr.sum(-1), lf.sum(-1)
    margin_future = beta * ((s_lf[:P] - s_lr[:P]) - (s_lf[P:] - s_lr[P:]))
    coef = beta * torch.sigmoid(-margin_future)
    (g_expected,) = torch.autograd.grad(-(coef * (s_lp[:P] - s_lp[P:])).mean(), h)
    torch.testing.assert_close(g_fpa, g_expected, rtol=1e-10, atol=1e-12)
    if lam > 0:  # the future coefficient genuinely differs from the current one
        margin = beta * ((s_lp[:P] - s_lr[:P]) - (s_lp[P:] - s_lr[P:]))
        assert not torch.allclose(coef, beta * torch.sigmoid(-margin.detach()))


# --------------------------------------------------------------------------- hand-computed values

def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def sig(v):
    return 1 / (1 + math.exp(-v))


def test_dpo_and_rpo_values():
    # ratios: chosen −1 − (−2) = 1, rejected −3 − (−2) = −1 → margin 2, β·margin = 0.2
    x = ObjectiveInputs.from_pairs(t(-1.0), t(-3.0), t(-2.0), t(-2.0))
    assert DPO(beta=0.1)(x).item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-14)
    # RPO with 2-token chosen [-1, -3] (NLL token mean 2) and 1-token rejected.
    x = ObjectiveInputs.from_pairs(t([-1.0, -3.0]), t([-3.0]), t([-1.5, -1.5]), t([-2.0]),
                                   chosen_mask=torch.tensor([[True, True]]), rejected_mask=torch.tensor([[True]]))
    # chosen ratio −4 − (−3) = −1, rejected −1 → margin 0
    assert RPO(beta=0.1, alpha=0.5)(x).item() == pytest.approx(math.log(2) + 0.5 * 2.0, abs=1e-14)


def test_ipo_value():
    # chosen tokens [-1, -1] vs ref [-2, -2]: mean ratio 1 (sum 2); rejected [-2] vs [-1]: −1 → h = 2; 1/(2β) = 1
    x = ObjectiveInputs.from_pairs(t([-1.0, -1.0]), t([-2.0]), t([-2.0, -2.0]), t([-1.0]),
                                   chosen_mask=torch.tensor([[True, True]]), rejected_mask=torch.tensor([[True]]))
    assert IPO(beta=0.5)(x).item() == pytest.approx(1.0, abs=1e-14)
    assert IPO(beta=0.5, reduce="sum")(x).item() == pytest.approx((3 - 1) ** 2, abs=1e-14)


def test_simper_value():
    x = ObjectiveInputs.from_pairs(t([math.log(0.5), math.log(0.5)]), t([math.log(0.25)]),
                                   chosen_mask=torch.tensor([[True, True]]), rejected_mask=torch.tensor([[True]]))
    assert SimPER()(x).item() == pytest.approx(-0.5 + 0.25, abs=1e-14)


@pytest.mark.parametrize("kl_offset, z", [(0.5, 0.5), (-0.5, 0.0)])
def test_kto_value(kl_offset, z):
    kl_pol = t([-1.0], [-2.0])
    kl = ObjectiveInputs(policy=kl_pol, mask=torch.ones(2, 1), reference=kl_pol - kl_offset)
    # desirable r = 1, undesirable r = −1
    x = ObjectiveInputs(policy=t([-1.0], [-3.0]), mask=torch.ones(2, 1), reference=t([-2.0], [-2.0]),
                        chosen=torch.tensor([True, False]), kl=kl)
    obj = KTO(beta=1.0, desirable_weight=2.0, undesirable_weight=3.0)
    expected = (2 * (1 - sig(1 - z)) + 3 * (1 - sig(z + 1))) / 2
    assert obj(x).item() == pytest.approx(expected, abs=1e-14)
    assert obj.reference_point(x).item() == pytest.approx(z, abs=1e-14)


@pytest.mark.parametrize("weighting", ["token", "sequence"])
def test_offline_pg_value(weighting):
    # groups {0: rewards 1, 0 → A = ±0.5}, {1: rewards 1, 1 → A = 0}
    x = ObjectiveInputs(policy=t([-1.0, -2.0], [-0.5, 0.0], [-1.0, -1.0], [-2.0, -2.0]),
                        reference=t([-1.5, -1.0], [-2.0, 0.0], [-3.0, -1.0], [-1.0, -1.0]),
                        mask=torch.tensor([[True, True], [True, False], [True, True], [True, True]]),
                        reward=t(1.0, 0.0, 1.0, 1.0), group=torch.tensor([0, 0, 1, 1]))
    obj = OfflinePG(clip=2.0, weighting=weighting)
    if weighting == "token":  # row 0 ratios e^0.5, e^−1 (unclipped); row 1 ratio e^1.5 → clipped to 2
        row0 = -0.5 * (math.exp(0.5) * -1 + math.exp(-1) * -2)
    else:  # row 0 sequence ratio e^(0.5 − 1); row 1 e^1.5 → 2
        row0 = -0.5 * math.exp(-0.5) * -3
    row1 = 0.5 * 2.0 * -0.5
    assert obj(x).item() == pytest.approx((row0 + row1) / 4, abs=1e-14)
