"""GRPO parity with TRL 1.16's own ``GRPOTrainer`` code: advantages, loss and gradient.

A real ``GRPOTrainer`` is built on the tiny local model for each configuration, so every attribute its loss
reads comes from TRL's own ``__init__`` and ``GRPOConfig``. Two TRL code paths are driven:

- advantages: ``_generate_and_score_completions`` with a ``rollout_func`` (TRL's hook for custom
  generation) that returns fixed completions and a reward function that returns fixed rewards, so the
  group mean / std normalisation is TRL's, inline in that method;
- loss: ``_compute_loss(model, inputs)`` on the batch that method produced, with the per-token log-prob
  function patched on the instance to return our fixed policy log-probs (a leaf with grad) and the inputs
  given fixed behaviour (``old_per_token_logps``) and reference (``ref_per_token_logps``) log-probs.

TRL scores rewards and advantages in float32, so advantages agree to float32 precision; the loss and its
gradient are compared in float64 on the same advantages.
"""

from __future__ import annotations

import pytest
import torch

from fpa.objectives import GRPO, ObjectiveInputs

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

G = 3  # completions per prompt (TRL's num_generations)
REWARDS = [1.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]  # three groups; the last one has no spread
LENGTHS = [1, 4, 2, 5, 3, 5, 2, 1, 4]  # completion tokens per row
MAX_COMPLETION_LENGTH = 7


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fpa.testing import build_model

    path = build_model(tmp_path_factory.mktemp("grpo-parity") / "model")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def rollout(prompts, trainer):
    """Fixed completions, whatever the prompt: row i has LENGTHS[i] tokens."""
    return {"prompt_ids": [[5, 6, 7]] * len(prompts),
            "completion_ids": [[8 + t for t in range(LENGTHS[i])] for i in range(len(prompts))],
            "logprobs": [[-1.0] * LENGTHS[i] for i in range(len(prompts))]}


def fixed_rewards(completions, **_):
    return REWARDS[:len(completions)]


def trl_trainer(tiny, tmp_path, **config) -> GRPOTrainer:
    model, tokenizer = tiny
    args = GRPOConfig(output_dir=str(tmp_path), num_generations=G, per_device_train_batch_size=len(REWARDS),
                      max_completion_length=MAX_COMPLETION_LENGTH, report_to=[], use_cpu=True,
                      logging_strategy="no", save_strategy="no", **config)
    trainer = GRPOTrainer(model=model, reward_funcs=fixed_rewards, args=args, processing_class=tokenizer,
                          train_dataset=datasets.Dataset.from_dict({"prompt": ["1+1="] * len(REWARDS)}),
                          rollout_func=rollout)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; one micro-batch per optimizer step
    return trainer


def trl_batch(trainer) -> dict:
    """TRL's own scored batch for our fixed completions and rewards (advantages computed by TRL)."""
    rows = [{"prompt": f"problem {i // G}"} for i in range(len(REWARDS))]
    return trainer._generate_and_score_completions(rows)


def fixed_logprobs(mask: torch.Tensor, seed: int = 0):
    """(policy leaf, behaviour, reference) [B, T] float64, zero off the completion; the policy within
    ±0.6 nat of the behaviour, so the ratio leaves [0.8, 1.2] on some tokens and stays inside on others."""
    g = torch.Generator().manual_seed(seed)
    shape = mask.shape
    behaviour = -(torch.rand(shape, generator=g, dtype=torch.float64) * 3 + 0.05) * mask
    policy = (behaviour + 0.6 * (2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1)) * mask
    reference = (behaviour + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)) * mask
    return policy.requires_grad_(), behaviour, reference


def group_ids() -> torch.Tensor:
    return torch.arange(len(REWARDS)) // G


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_match_trl(tiny, tmp_path, scale_rewards):
    trainer = trl_trainer(tiny, tmp_path, scale_rewards=scale_rewards)
    theirs = trl_batch(trainer)["advantages"]
    mask = torch.ones(len(REWARDS), 1, dtype=torch.bool)
    x = ObjectiveInputs(policy=torch.zeros(len(REWARDS), 1, dtype=torch.float64), mask=mask,
                        reward=torch.tensor(REWARDS, dtype=torch.float64), group=group_ids())
    ours = GRPO(scale_rewards=scale_rewards).advantage(x)
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-6, atol=1e-6)
    assert ours[:G].abs().min() > 0.1 and (ours[-G:] == 0).all()  # a group without spread has no advantage


# (loss_type, beta, epsilon_high, kl_bias_correction): every loss type with and without KL; TRL's default
# bias-corrected KL and the plain k3 one; symmetric and DAPO's clip-higher bounds.
LOSS_CASES = [(loss_type, beta, eps_high, correction) for loss_type in ("grpo", "dapo", "dr_grpo")
              for beta, correction in ((0.0, True), (0.04, True), (0.04, False)) for eps_high in (None, 0.28)]


@pytest.mark.parametrize("loss_type, beta, epsilon_high, kl_bias_correction", LOSS_CASES,
                         ids=[f"{lt}-beta{b}-eh{e}-kl{'corr' if c else 'k3'}" for lt, b, e, c in LOSS_CASES])
def test_loss_and_gradient_match_trl(tiny, tmp_path, loss_type, beta, epsilon_high, kl_bias_correction):
    trainer = trl_trainer(tiny, tmp_path, loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=epsilon_high,
                          use_bias_correction_kl=kl_bias_correction)
    batch = trl_batch(trainer)
    mask = batch["completion_mask"].bool()
    assert mask.sum(-1).tolist() == LENGTHS
    policy, behaviour, reference = fixed_logprobs(mask)
    objective = GRPO(beta=beta, epsilon_low=0.2, epsilon_high=epsilon_high, loss_type=loss_type,
                     max_completion_length=MAX_COMPLETION_LENGTH, kl_bias_correction=kl_bias_correction)
    x = ObjectiveInputs(policy=policy, mask=mask, reference=reference, behaviour=behaviour,
                        reward=torch.tensor(REWARDS, dtype=torch.float64), group=group_ids())

    def per_token_logps(model, input_ids, attention_mask, logits_to_keep, **_):
        assert logits_to_keep == mask.shape[1]
        return policy, torch.zeros_like(policy.detach()), None

    trainer._get_per_token_logps_and_entropies = per_token_logps
    inputs = {**batch, "advantages": objective.advantage(x), "old_per_token_logps": behaviour}
    if beta:
        inputs["ref_per_token_logps"] = reference
    theirs = trainer._compute_loss(trainer.model, inputs)
    ours = objective(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    g_ours, g_theirs = (torch.autograd.grad(v, policy, retain_graph=True)[0] for v in (ours, theirs))
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)
    # Clipping is active on some tokens (TRL's own count), and it matters: our loss without clipping differs.
    metrics = trainer._metrics["train"]
    assert 0 < metrics["clip_ratio/region_mean"][-1] < 1
    assert objective.metrics(x)["clipped_frac"].item() == pytest.approx(metrics["clip_ratio/region_mean"][-1])
    wide = GRPO(beta=beta, epsilon_low=0.99, epsilon_high=100.0, loss_type=loss_type,
                max_completion_length=MAX_COMPLETION_LENGTH, kl_bias_correction=kl_bias_correction)
    assert not torch.allclose(torch.autograd.grad(wide(x), policy)[0], g_ours)
    if beta:
        assert objective.metrics(x)["kl"].item() == pytest.approx(metrics["kl"][-1])


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_on_policy_batch_matches_trl_without_old_logps(tiny, tmp_path, loss_type):
    """No behaviour log-probs: TRL uses the detached current policy (ratio 1), and so do we."""
    trainer = trl_trainer(tiny, tmp_path, loss_type=loss_type)
    batch = trl_batch(trainer)
    assert "old_per_token_logps" not in batch
    mask = batch["completion_mask"].bool()
    policy, _, _ = fixed_logprobs(mask, seed=1)
    objective = GRPO(loss_type=loss_type, max_completion_length=MAX_COMPLETION_LENGTH)
    x = ObjectiveInputs(policy=policy, mask=mask, reward=torch.tensor(REWARDS, dtype=torch.float64),
                        group=group_ids())
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (policy, torch.zeros_like(policy.detach()), None)
    theirs = trainer._compute_loss(trainer.model, {**batch, "advantages": objective.advantage(x)})
    ours = objective(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, policy, retain_graph=True)[0],
                               torch.autograd.grad(theirs, policy)[0], rtol=1e-12, atol=1e-12)


def test_trl_advantages_end_to_end(tiny, tmp_path):
    """TRL's float32 advantages fed to both losses: the only gap left is float32 rounding."""
    trainer = trl_trainer(tiny, tmp_path, loss_type="grpo")
    batch = trl_batch(trainer)
    mask = batch["completion_mask"].bool()
    policy, behaviour, _ = fixed_logprobs(mask, seed=2)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (policy, torch.zeros_like(policy.detach()), None)
    theirs = trainer._compute_loss(trainer.model, {**batch, "old_per_token_logps": behaviour})
    ours = GRPO()(ObjectiveInputs(policy=policy, mask=mask, behaviour=behaviour, group=group_ids(),
                                  reward=torch.tensor(REWARDS, dtype=torch.float64)))
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-6, atol=1e-7)
