"""GRPO in the framework: FPA-GRPO's coefficients by hand, behaviour log-probs, reference loading, config
errors, and ``fpa-train objective=grpo`` on the smoke experiment. (Parity with TRL: test_grpo_trl_parity.py;
closed-form coefficients, finite differences and generic FPA checks: test_objectives.py.)"""

from __future__ import annotations

import json
import math

import pytest
import torch

from fpa.config.rules import fpa_changes_nothing
from fpa.fpa import FuturePolicy
from fpa.guards import ConfigError
from fpa.objectives import DPO, GRPO, ObjectiveInputs

# Two groups of two rows, three tokens each (the last row two): rewards 1/0 → advantages ±1/√2/(...)
MASK = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
REWARD = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
GROUP = torch.tensor([0, 0, 1, 1])


def hand_advantage() -> torch.Tensor:
    # group mean 0.5, unbiased std of {1, 0} = 1/√2: A = ±0.5 / (1/√2 + 1e-4)
    a = 0.5 / (1 / math.sqrt(2) + 1e-4)
    return torch.tensor([a, -a, -a, a], dtype=torch.float64)


def batch(policy, future, behaviour=None, reference=None):
    return ObjectiveInputs(policy=policy, mask=MASK, future=future, behaviour=behaviour, reference=reference,
                           reward=REWARD, group=GROUP)


def expected_grad(ratio: torch.Tensor, eps_low=0.2, eps_high=0.2) -> torch.Tensor:
    """∂L/∂lp for loss_type=grpo, β=0: −A·ρ·[unclipped branch is the min] / |y| / B, ρ the given ratio."""
    a = hand_advantage()[:, None]
    active = ((a > 0) & (ratio <= 1 + eps_high)) | ((a < 0) & (ratio >= 1 - eps_low))
    length = MASK.sum(-1, keepdim=True).double()
    return -(a * ratio * active * MASK) / length / MASK.shape[0]


def logprobs():
    lp = torch.tensor([[-1.0, -0.5, -2.0], [-0.7, -1.2, -0.3], [-2.0, -0.1, -0.9], [-0.4, -1.5, 0.0]],
                      dtype=torch.float64) * MASK
    # The future policy moves every token by ±0.3 nat: ratios e^±0.3 ≈ 1.35 / 0.74 leave [0.8, 1.2].
    shift = torch.tensor([[0.3, -0.3, 0.05], [0.3, -0.3, 0.05], [-0.3, 0.3, 0.05], [0.3, -0.3, 0.0]],
                         dtype=torch.float64)
    behaviour = (lp + torch.tensor([0.1, -0.1, 0.02], dtype=torch.float64)) * MASK
    return lp, (lp + shift) * MASK, behaviour


def test_advantages_by_hand():
    lp, _, _ = logprobs()
    x = batch(lp, None)
    torch.testing.assert_close(GRPO().advantage(x), hand_advantage(), rtol=0, atol=1e-15)
    torch.testing.assert_close(GRPO(scale_rewards="none").advantage(x), REWARD - 0.5, rtol=0, atol=0)
    single = ObjectiveInputs(policy=lp, mask=MASK, reward=REWARD, group=torch.arange(4))  # groups of one row
    assert (GRPO().advantage(single) == 0).all()


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_fpa_ratio_against_stored_behaviour(lam):
    """FPA-GRPO: the clipped ratio's coefficient is read at π̂ against the stored behaviour log-probs."""
    lp, future, behaviour = logprobs()
    policy = lp.clone().requires_grad_()
    out = FuturePolicy(lam=lam)(GRPO(), batch(policy, future if lam else lp, behaviour))
    (g,) = torch.autograd.grad(out.loss, policy)
    at = future if lam else lp
    torch.testing.assert_close(g, expected_grad(torch.exp(at - behaviour)), rtol=0, atol=1e-15)
    if lam:  # the future policy clips tokens the current one does not: the coefficients differ
        assert not torch.allclose(g, expected_grad(torch.exp(lp - behaviour)))
    # The loss value stays GRPO's at the current policy.
    torch.testing.assert_close(out.loss.detach(), GRPO()(batch(lp, None, behaviour)), rtol=0, atol=1e-15)


def test_without_behaviour_the_batch_is_on_policy_and_fpa_reads_future_over_current():
    lp, future, _ = logprobs()
    policy = lp.clone().requires_grad_()
    (g,) = torch.autograd.grad(GRPO()(batch(policy, None)), policy)
    torch.testing.assert_close(g, expected_grad(torch.ones_like(lp)), rtol=0, atol=1e-15)  # ratio 1, nothing clipped
    out = FuturePolicy(lam=1.0)(GRPO(), batch(policy, future))
    (g_fpa,) = torch.autograd.grad(out.loss, policy)
    torch.testing.assert_close(g_fpa, expected_grad(torch.exp(future - lp)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("with_behaviour", [False, True])
@pytest.mark.parametrize("kw", [{}, {"beta": 0.1, "loss_type": "dapo"}, {"beta": 0.1, "loss_type": "dr_grpo",
                                                                       "max_completion_length": 5}])
def test_lambda_zero_is_exactly_the_base_gradient(kw, with_behaviour):
    lp, _, behaviour = logprobs()
    reference = (lp - 0.2) * MASK
    objective = GRPO(**kw)
    a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    beh = behaviour if with_behaviour else None
    objective(batch(a, None, beh, reference)).backward()
    FuturePolicy(lam=0.0)(objective, batch(b, b.detach(), beh, reference)).loss.backward()
    assert torch.equal(a.grad, b.grad)


def test_fpa_is_not_refused_for_grpo():
    assert not fpa_changes_nothing(GRPO())
    assert not fpa_changes_nothing(GRPO(beta=0.1))


def test_needs_reference_follows_beta():
    assert GRPO().needs_reference is False and GRPO(beta=0.04).needs_reference is True
    assert DPO().needs_reference is True  # the class default is unchanged for the others
    with pytest.raises(ValueError, match="needs reference log-probs"):
        lp, _, _ = logprobs()
        GRPO(beta=0.1)(batch(lp, None))


@pytest.mark.parametrize("kw, match", [
    ({"loss_type": "bnpo"}, "loss_type: must be one of grpo | dapo | dr_grpo"),
    ({"scale_rewards": True}, "scale_rewards: must be one of group | batch | none"),
    ({"beta": -1}, "beta: must be"), ({"epsilon_low": 1.5}, "epsilon_low: must be"),
    ({"epsilon_high": -0.1}, "epsilon_high: must be"), ({"kl_bias_correction": "yes"}, "kl_bias_correction"),
    ({"loss_type": "dr_grpo", "max_completion_length": None}, "max_completion_length: required with loss_type=dr_grpo"),
    ({"max_completion_length": 0}, "max_completion_length: must be")])
def test_bad_arguments_name_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        GRPO(**kw)


def test_config_errors_name_the_config_key(smoke_cfg):
    from fpa.config.parts import train_parts

    parts = train_parts(smoke_cfg("objective=grpo"))
    assert parts.objective.max_completion_length == 16  # the smoke experiment's generate.max_new_tokens
    for overrides, match in [(["objective.loss_type=bnpo"], "objective.loss_type: must be one of"),
                             (["objective.loss_type=dr_grpo", "objective.max_completion_length=null"],
                              "objective.max_completion_length: required")]:
        with pytest.raises(ConfigError, match=match):
            train_parts(smoke_cfg("objective=grpo", *overrides))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from fpa.testing import build_model, write_trajectories

    root = tmp_path_factory.mktemp("grpo")
    return build_model(root / "model", hidden_size=64, max_positions=64), write_trajectories(root / "t.jsonl", 4)


def test_module_loads_a_reference_only_when_used_and_passes_behaviour(assets):
    from fpa.logprobs import CompletionLogProbs
    from fpa.module import OfflineRLModule

    model, _ = assets
    assert OfflineRLModule(str(model), GRPO(), FuturePolicy(lam=0.0)).reference is None
    assert OfflineRLModule(str(model), GRPO(beta=0.1), FuturePolicy(lam=0.0)).reference is not None
    assert OfflineRLModule(str(model), GRPO(), FuturePolicy(lam=1.0)).reference is not None
    module = OfflineRLModule(str(model), GRPO(), FuturePolicy(lam=0.0))
    lp, _, behaviour = logprobs()
    module.logprobs = lambda *a, **k: CompletionLogProbs(policy=lp, mask=MASK)
    masks = torch.ones(MASK.shape[0], MASK.shape[1] + 1, dtype=torch.long)  # the ledger counts the rows' tokens
    rows = {"input_ids": None, "attention_mask": masks, "completion_mask": masks.bool(), "chosen": REWARD > 0,
            "reward": REWARD, "group": GROUP}
    assert module.objective_inputs(rows).behaviour is None
    assert module.objective_inputs({**rows, "behaviour": behaviour}).behaviour is behaviour


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_fpa_train_objective_grpo_smoke(assets, smoke_cfg, tmp_path, lam):
    """``fpa-train objective=grpo`` offline on the smoke experiment: 2 steps from stored trajectories."""
    from fpa.cli.train import run

    model, trajectories = assets
    out = run(smoke_cfg("objective=grpo", f"fpa.lam={lam}", f"model.reference={model}",
                        f"data.trajectories={trajectories}", "train.max_steps=2", "callbacks.eval.every_n_steps=0",
                        "benchmark.n_problems=2", "objective.beta=0.04"), tmp_path / "run")
    assert out["objective"] == "GRPO" and 0.0 <= out["policy"]["pass@1"] <= 1.0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["objective"] == "GRPO"
    header, *rows = next((tmp_path / "run").glob("csv/*/metrics.csv")).read_text().splitlines()
    columns = header.split(",")
    for col in ("train/loss", "train/objective/clipped_frac", "train/objective/kl", "train/coef/current/chosen"):
        assert col in columns, col
    steps = [r.split(",")[columns.index("step")] for r in rows if r.split(",")[columns.index("train/loss")]]
    assert len(steps) == 2


# ------------------------------------------------------------------------------ data parallelism
SHARDS = {0: 4, 1: 4}  # rows per rank (equal, as DDP's batches): whole groups of two, unequal token counts


def _shard(rank: int):
    g = torch.Generator().manual_seed(10 + rank)
    n, T = SHARDS[rank], 5
    mask = torch.arange(T) < torch.randint(1, T + 1, (n,), generator=g)[:, None]
    policy = -torch.rand(n, T, generator=g, dtype=torch.float64) * 2 * mask
    behaviour = (policy + 0.3 * torch.randn(n, T, generator=g, dtype=torch.float64)) * mask
    reward = torch.rand(n, generator=g, dtype=torch.float64)
    group = torch.arange(n) // 2 + 10 * rank
    return policy, behaviour, mask, reward, group


def _rank_gradient(policy, behaviour, mask, reward, group, **kw):
    leaf = policy.clone().requires_grad_()
    loss = GRPO(**kw)(ObjectiveInputs(policy=leaf, mask=mask, behaviour=behaviour, reward=reward, group=group))
    (g,) = torch.autograd.grad(loss, leaf)
    return g


def _ddp_worker(rank: int, init_file: str, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for name, kw in DDP_CASES.items():
            out[(name, rank)] = _rank_gradient(*_shard(rank), **kw)
    finally:
        dist.destroy_process_group()


DDP_CASES = {"dapo": {"loss_type": "dapo"}, "batch_std": {"scale_rewards": "batch"}}


def test_data_parallel_gradient_is_the_global_batch_gradient(tmp_path):
    """Each rank's gradient, averaged over ranks as DDP does, equals the gradient of the loss on all rows."""
    import torch.multiprocessing as mp

    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
    whole = [torch.cat(parts) for parts in zip(*(_shard(r) for r in SHARDS))]
    for name, kw in DDP_CASES.items():
        expected = _rank_gradient(*whole, **kw)
        averaged = torch.cat([out[(name, r)] / len(SHARDS) for r in SHARDS])
        torch.testing.assert_close(averaged, expected, rtol=1e-12, atol=1e-14, msg=lambda m: f"{name}: {m}")
        local = torch.cat([_rank_gradient(*_shard(r), **kw) / len(SHARDS) for r in SHARDS])
        assert not torch.allclose(local, expected), name  # the test can tell global from per-rank statistics
