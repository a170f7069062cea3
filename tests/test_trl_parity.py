"""Parity with TRL's own loss code (DPO sigmoid, IPO, RPO = sigmoid + sft, KTO), value and gradient.

TRL (>= 1.x) computes its losses inside ``DPOTrainer._compute_loss`` / ``KTOTrainer._compute_loss``,
which call the model. We call them unbound with a stand-in ``self`` (just the attributes they read)
and a stand-in model that returns our per-token log-probs as TRL's fused LM head would: zero
where the label is -100, one position fewer than ``input_ids`` (the shift).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from fpa.objectives import DPO, IPO, KTO, RPO, ObjectiveInputs

trl = pytest.importorskip("trl")
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402


class FakeLM:
    """Returns precomputed per-token log-probs, chosen by the marker value filling ``input_ids``."""

    training = False

    def __init__(self, *log_probs: torch.Tensor) -> None:
        self.log_probs = log_probs

    def __call__(self, input_ids, **_):
        lp = self.log_probs[int(input_ids[0, 0])]
        zeros = torch.zeros_like(lp.detach())
        return SimpleNamespace(log_probs=lp, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def fake_self(**attrs) -> SimpleNamespace:
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda v: v, gather=lambda v: v)
    self = SimpleNamespace(model=FakeLM(), accelerator=accelerator, aux_loss_enabled=False, precompute_ref_logps=True,
                           _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1, **attrs)
    # KTO's loss calls this helper on self; bind TRL's own.
    self._compute_kl_logps = KTOTrainer._compute_kl_logps.__get__(self)
    return self


def token_inputs(marker: int, mask: torch.Tensor) -> dict:
    """input_ids / attention_mask / completion_mask with one prompt token in front (TRL shifts by one)."""
    full = torch.cat([torch.zeros(mask.shape[0], 1, dtype=torch.long), mask.long()], 1)
    return {"input_ids": torch.full_like(full, marker), "attention_mask": torch.ones_like(full),
            "completion_mask": full}


def random_pairs(P=4, T=6, seed=0, equal_chosen_lengths=False):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (2 * P,), generator=g)
    if equal_chosen_lengths:
        lengths[:P] = T
    mask = torch.arange(T) < lengths[:, None]
    policy = (-3 * torch.rand(2 * P, T, generator=g, dtype=torch.float64) * mask).requires_grad_()
    reference = -3 * torch.rand(2 * P, T, generator=g, dtype=torch.float64) * mask
    return ObjectiveInputs(policy=policy, mask=mask, reference=reference, chosen=torch.arange(2 * P) < P)


def trl_dpo(x: ObjectiveInputs, beta: float, loss_types: list[str], loss_weights: list[float]) -> torch.Tensor:
    ref = (x.reference * x.mask).sum(-1)
    P = len(ref) // 2
    inputs = {**token_inputs(0, x.mask), "ref_chosen_logps": ref[:P], "ref_rejected_logps": ref[P:]}
    self = fake_self(beta=beta, ld_alpha=None, f_divergence_type="reverse_kl", loss_types=loss_types,
                     loss_weights=loss_weights, use_weighting=False)
    return DPOTrainer._compute_loss(self, FakeLM(x.policy), inputs, return_outputs=False)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, x: ObjectiveInputs) -> None:
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # Compared on completion tokens only: TRL relies on its LM head to zero (and not differentiate)
    # padded positions, while our stand-in hands it plain tensors there.
    g_ours, g_theirs = (torch.autograd.grad(v, x.policy, retain_graph=True)[0] * x.mask for v in (ours, theirs))
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_dpo_sigmoid(beta):
    x = random_pairs()
    assert_same(DPO(beta=beta)(x), trl_dpo(x, beta, ["sigmoid"], [1.0]), x)


def test_ipo():
    # TRL's "ipo" divides the summed log-ratios by the completion length = our reduce="mean".
    x = random_pairs(seed=1)
    assert_same(IPO(beta=0.3)(x), trl_dpo(x, 0.3, ["ipo"], [1.0]), x)


@pytest.mark.parametrize("alpha", [1.0, 0.25])
def test_rpo_equal_lengths(alpha):
    # TRL's RPO is loss_type=["sigmoid", "sft"] with loss_weights=[1, alpha].
    x = random_pairs(seed=2, equal_chosen_lengths=True)
    assert_same(RPO(beta=0.1, alpha=alpha)(x), trl_dpo(x, 0.1, ["sigmoid", "sft"], [1.0, alpha]), x)


def test_rpo_reduction_differs_only_in_token_pooling():
    """TRL's "sft" term pools all chosen tokens of the batch (Σ tokens / #tokens); ours, like the RPO
    paper, averages per sequence then over pairs. With unequal chosen lengths that is the only gap."""
    x = random_pairs(seed=3)
    P = x.policy.shape[0] // 2
    pooled_nll = -x.policy[:P][x.mask[:P]].mean()
    assert_same(DPO(beta=0.1)(x) + 0.5 * pooled_nll, trl_dpo(x, 0.1, ["sigmoid", "sft"], [1.0, 0.5]), x)
    assert not torch.allclose(RPO(beta=0.1, alpha=0.5)(x), trl_dpo(x, 0.1, ["sigmoid", "sft"], [1.0, 0.5]))


@pytest.mark.parametrize("kl_shift", [0.3, -0.3])  # z > 0, and z clamped to 0
@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.3, 0.6)])
def test_kto(kl_shift, weights):
    g = torch.Generator().manual_seed(4)
    B, T = 7, 5
    mask = torch.arange(T) < torch.randint(1, T + 1, (B,), generator=g)[:, None]
    kl_mask = torch.arange(T) < torch.randint(1, T + 1, (B,), generator=g)[:, None]
    policy = (-3 * torch.rand(B, T, generator=g, dtype=torch.float64) * mask).requires_grad_()
    reference = -3 * torch.rand(B, T, generator=g, dtype=torch.float64) * mask
    kl_ref = -3 * torch.rand(B, T, generator=g, dtype=torch.float64) * kl_mask
    kl_pol = (kl_ref + kl_shift) * kl_mask
    chosen = torch.tensor([True, False, True, True, False, False, True])
    x = ObjectiveInputs(policy=policy, mask=mask, reference=reference, chosen=chosen,
                        kl=ObjectiveInputs(policy=kl_pol, mask=kl_mask, reference=kl_ref))

    kl_inputs = token_inputs(1, kl_mask)
    inputs = {**token_inputs(0, mask), "label": chosen, "ref_logps": (reference * mask).sum(-1),
              "ref_KL_logps": (kl_ref * kl_mask).sum(-1), "KL_input_ids": kl_inputs["input_ids"],
              "KL_attention_mask": kl_inputs["attention_mask"], "KL_completion_mask": kl_inputs["completion_mask"]}
    self = fake_self(beta=0.2, loss_type="kto", calculate_KL=True, desirable_weight=weights[0],
                     undesirable_weight=weights[1])
    theirs = KTOTrainer._compute_loss(self, FakeLM(policy, kl_pol), inputs, return_outputs=False)
    ours = KTO(beta=0.2, desirable_weight=weights[0], undesirable_weight=weights[1])(x)
    assert_same(ours, theirs, x)
    assert self._metrics["eval"]["kl"][-1] == pytest.approx(KTO().reference_point(x).item(), abs=1e-12)
