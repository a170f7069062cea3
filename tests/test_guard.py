"""The future guard (fpa.guard): the gated gradient against a hand computation, the ablation's gate,
its config refusals, and the identities it changes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from testconfig import compose_config
from fpa.config.identity import config_hash
from fpa.config.parts import train_parts
from fpa.diagnostics import batch_diagnostics
from fpa.fpa import FuturePolicy
from fpa.guards import ConfigError
from fpa.objectives import DPO, IPO, KTO, SimPER, ObjectiveInputs

P, T = 4, 3


def _batch():
    """4 pairs, summed chosen log-ratios under π_θ / π̂ chosen so that the gates are known:

    pair 0: current −, future −  (gated by both)     pair 1: current +, future +  (gated by neither)
    pair 2: current +, future −  (future gate only)  pair 3: current −, future +  (current gate only)
    """
    ref = torch.full((2 * P, T), -1.0, dtype=torch.float64)
    cur_delta = torch.tensor([-0.3, 0.4, 0.2, -0.1], dtype=torch.float64)
    fut_delta = torch.tensor([-0.5, 0.6, -0.2, 0.3], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    policy = ref + 0.2 * torch.randn(2 * P, T, generator=g, dtype=torch.float64)
    future = ref + 0.2 * torch.randn(2 * P, T, generator=g, dtype=torch.float64)
    # shift the chosen rows' first token so that the summed log-ratio is exactly the wanted one
    policy[:P, 0] += cur_delta - (policy[:P] - ref[:P]).sum(-1)
    future[:P, 0] += fut_delta - (future[:P] - ref[:P]).sum(-1)
    mask = torch.ones(2 * P, T, dtype=torch.bool)
    return policy, future, ref, mask


def _grad(fpa, objective, policy, future, ref, mask):
    leaf = policy.clone().requires_grad_(True)
    x = ObjectiveInputs(policy=leaf, mask=mask, reference=ref, future=future, chosen=torch.arange(2 * P) < P)
    out = fpa(objective, x)
    out.loss.backward()
    return leaf.grad, out


def _dpo_hand_grad(beta, policy_for_coef, ref, gated):
    """dL/dlog π_t for the mean DPO loss with coefficients β σ(−β margin) at ``policy_for_coef``, by hand."""
    s = (policy_for_coef - ref).sum(-1)
    margin = beta * (s[:P] - s[P:])
    c = beta * torch.sigmoid(-margin)
    grad = torch.zeros(2 * P, T, dtype=torch.float64)
    grad[:P] = -(c / P)[:, None]
    grad[P:] = torch.where(gated, torch.zeros_like(c), c / P)[:, None]
    return grad


@pytest.mark.parametrize("guard,expected", [("future", [True, False, True, False]),
                                            ("current", [True, False, False, True])])
def test_guard_gradient_equals_hand_computation(guard, expected):
    policy, future, ref, mask = _batch()
    beta, lam = 0.5, 1.0
    grad, out = _grad(FuturePolicy(lam=lam, guard=guard), DPO(beta=beta), policy, future, ref, mask)
    gated = torch.tensor(expected)
    assert out.gated.tolist() == expected
    torch.testing.assert_close(grad, _dpo_hand_grad(beta, future, ref, gated), rtol=0, atol=1e-15)
    # the gated pairs' rejected rows get no gradient; the chosen rows keep theirs
    assert (grad[P:][gated] == 0).all() and (grad[:P] != 0).all() and (grad[P:][~gated] != 0).all()


def test_guard_off_is_todays_gradient_exactly():
    policy, future, ref, mask = _batch()
    for lam in (0.0, 1.0):
        a, _ = _grad(FuturePolicy(lam=lam), DPO(beta=0.5), policy, future, ref, mask)
        b, out = _grad(FuturePolicy(lam=lam, guard=None), DPO(beta=0.5), policy, future, ref, mask)
        assert torch.equal(a, b) and out.gated is None
    assert torch.equal(a, _dpo_hand_grad(0.5, future, ref, torch.zeros(P, dtype=torch.bool)))


def test_future_and_current_gates_differ_on_a_constructed_batch():
    policy, future, ref, mask = _batch()
    gf, of = _grad(FuturePolicy(lam=1.0, guard="future"), DPO(beta=0.5), policy, future, ref, mask)
    gc, oc = _grad(FuturePolicy(lam=1.0, guard="current"), DPO(beta=0.5), policy, future, ref, mask)
    assert of.gated.tolist() != oc.gated.tolist() and not torch.allclose(gf, gc)


def test_at_lambda_zero_the_two_gates_are_the_same():
    policy, _, ref, mask = _batch()
    for future in (None, policy):  # the module passes future = policy at λ = 0 when it has a reference
        gf, of = _grad(FuturePolicy(lam=0.0, guard="future"), DPO(beta=0.5), policy, future, ref, mask)
        gc, oc = _grad(FuturePolicy(lam=0.0, guard="current"), DPO(beta=0.5), policy, future, ref, mask)
        assert torch.equal(of.gated, oc.gated) and torch.equal(gf, gc)
        assert of.gated.tolist() == [True, False, False, True]


def test_guard_with_other_pair_objectives_zeroes_only_gated_rejected_rows():
    policy, future, ref, mask = _batch()
    for objective in (IPO(beta=0.5), SimPER()):
        plain, _ = _grad(FuturePolicy(lam=1.0), objective, policy, future, ref, mask)
        guarded, out = _grad(FuturePolicy(lam=1.0, guard="future"), objective, policy, future, ref, mask)
        rej = torch.cat([torch.zeros(P, dtype=torch.bool), out.gated])
        assert (guarded[rej] == 0).all()
        torch.testing.assert_close(guarded[~rej], plain[~rej], rtol=0, atol=0)


def test_gated_fraction_is_logged():
    policy, future, ref, mask = _batch()
    x = ObjectiveInputs(policy=policy, mask=mask, reference=ref, future=future, chosen=torch.arange(2 * P) < P)
    out = FuturePolicy(lam=1.0, guard="future")(DPO(beta=0.5), x)
    assert batch_diagnostics(x, out, "pairs")["guard/gated_fraction"].item() == 0.5
    assert "guard/gated_fraction" not in batch_diagnostics(x, FuturePolicy(lam=1.0)(DPO(beta=0.5), x), "pairs")


def test_bad_guard_values_and_non_pair_objectives_are_refused():
    with pytest.raises(ValueError, match=r"^guard: must be null \| future \| current \(the gate .* future\)"):
        FuturePolicy(guard=True)
    with pytest.raises(ValueError, match="^guard: must be null"):
        FuturePolicy(guard="both")
    x = ObjectiveInputs(policy=-torch.rand(4, 3), mask=torch.ones(4, 3), reference=-torch.rand(4, 3),
                        chosen=torch.tensor([True, False, True, False]), kl=None)
    with pytest.raises(ValueError, match="^guard: needs a pair objective"):
        FuturePolicy(guard="current").gate(KTO(), x)
    with pytest.raises(ValueError, match="^guard: needs the reference"):
        FuturePolicy(guard="current").gate(DPO(), ObjectiveInputs(policy=x.policy, mask=x.mask))


def _problems(*overrides):
    try:
        train_parts(compose_config(*overrides))
    except ConfigError as e:
        return e.problems
    return []


@pytest.mark.parametrize("objective", ["kto", "offline_pg", "rft"])
def test_config_refuses_guard_without_pairs_in_one_line(objective):
    problems = _problems("experiment=smoke", f"objective={objective}", "fpa.lam=0", "fpa.guard=future")
    assert len(problems) == 1 and problems[0].startswith("fpa.guard: future gates the rejected side of pairs")
    assert "\n" not in problems[0]


def test_config_accepts_guard_on_pair_objectives_and_rejects_bad_values():
    parts = train_parts(compose_config("experiment=smoke", "objective=simper", "fpa.lam=0", "fpa.guard=current"))
    assert parts.fpa.guard == "current" and parts.fpa.needs_reference  # SimPER: the guard loads a reference
    problems = _problems("experiment=smoke", "fpa.guard=true")
    assert len(problems) == 1 and problems[0].startswith("fpa.guard: must be null | future | current"), problems


def _plain(*overrides):
    cfg = compose_config("experiment=smoke", *overrides)
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def test_run_identity_follows_the_guard_and_not_its_null_default():
    base = _plain()
    without = {**base, "fpa": {k: v for k, v in base["fpa"].items() if k != "guard"}}
    assert config_hash(base) == config_hash(without)  # runs made before the key keep their directory
    hashes = {config_hash(_plain(f"fpa.guard={g}")) for g in ("null", "future", "current")}
    assert len(hashes) == 3


@pytest.mark.parametrize("objective,lam,guard", [("simper", 0.0, "future"), ("dpo", 1.0, "current")])
def test_one_training_step_with_the_guard(objective, lam, guard, smoke_cfg, tmp_path):
    """End to end: SimPER has no reference of its own, so the guard must load one (else the gate raises)."""
    from fpa.stages.train import train_policy
    from fpa.testing import build_model, write_trajectories

    model, trajectories = build_model(tmp_path / "model"), write_trajectories(tmp_path / "traj.jsonl", n_problems=6)
    parts = train_parts(smoke_cfg(f"objective={objective}", f"fpa.lam={lam}", f"fpa.guard={guard}",
                                  "train.max_steps=1", "data.batch_size=4", "callbacks.eval.every_n_steps=0",
                                  "callbacks.eval.at_end=false"))
    assert train_policy(parts, str(model), trajectories, tmp_path / "run", loggers=False).exists()


def test_a_checkpoint_made_without_the_guard_is_not_resumed_with_it():
    from fpa.config.identity import differences

    assert differences(_plain(), _plain("fpa.guard=future")) == ["fpa.guard <absent> → future"]
    assert differences(_plain("fpa.guard=current"), _plain("fpa.guard=future")) == ["fpa.guard current → future"]
