"""Rollouts during training (train.rollout_every): behaviour log-probs, on-policy ratios, exact resumption mid-round,
records, config rules, identity and the ledger."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import load_file

from fpa.config.identity import config_hash, result_config
from fpa.config.parts import train_parts
from fpa.data.datamodule import TrajectoryDataModule
from fpa.data.records import RecordError, check_trajectory, load_trajectories
from fpa.data.rows import row_values
from fpa.generation.behaviour import score_samples
from fpa.generation.hf import HFGenerator
from fpa.guards import ConfigError
from fpa.models.loading import load_model, load_tokenizer
from fpa.resume import find_last
from fpa.stages.train import train_policy
from fpa.testing import KillSwitch, Killed, build_model


class Recorder(KillSwitch):
    """Per optimizer step: the rows, loss and lr, and the largest |π_θ/μ − 1| of the batch before the update."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        with torch.no_grad():
            x = pl_module.objective_inputs(batch)
        ratio = torch.exp(x.policy - batch["behaviour"])[x.mask]
        self.steps[trainer.global_step] = {"ratio_gap": float((ratio - 1).abs().max())}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[trainer.global_step - 1].update(loss=outputs["loss"].detach().clone(), rows=batch["input_ids"].clone(),
                                                   lr=trainer.optimizers[0].param_groups[0]["lr"])


@pytest.fixture(scope="module")
def models(tmp_path_factory, smoke_cache):
    """A random tiny model, and the smoke warm start (about a third of its samples right: rewards differ)."""
    from fpa.cli.train import reference_model
    from testconfig import compose_config

    warm, _ = reference_model(train_parts(compose_config("experiment=smoke", f"paths.cache_dir={smoke_cache}")))
    return {"plain": str(build_model(tmp_path_factory.mktemp("rollouts") / "plain")), "warm": warm}


def _run(smoke_cfg, model, run_dir, recorder, *over):
    cfg = smoke_cfg("objective=grpo", "fpa.lam=0", "callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false",
                    "data.batch_size=4", "data.max_length=48", "train.max_steps=9", "train.rollout_every=3",
                    "rollout.n_problems=6", "rollout.k=4", "rollout.max_new_tokens=16", "rollout.temperature=1.3",
                    "optimizer.lr=3e-3", "scheduler.warmup_steps=2", "callbacks.checkpoint.every_n_train_steps=2",
                    "train.log_every_n_steps=1", *over)
    return train_policy(train_parts(cfg), model, None, run_dir, [CSVLogger(str(run_dir), name="csv")],
                        callbacks=[recorder])


def _records(run_dir):
    return {p.name: load_trajectories(p)[0] for p in sorted((run_dir / "rollouts").glob("round_*"))}


def test_on_policy_round_starts_at_ratio_one_and_moves_after(smoke_cfg, models, tmp_path):
    rec = Recorder()
    _run(smoke_cfg, models["warm"], tmp_path / "run", rec)
    rounds = _records(tmp_path / "run")
    assert sorted(rounds) == ["round_00000", "round_00001", "round_00002"]
    for records in rounds.values():  # 6 problems × 4 samples, each with one behaviour log-prob per sampled id
        assert len(records) == 24
        assert all(len(r["behaviour_logprobs"]) == len(r["completion_ids"]) for r in records)
    gaps = {s: v["ratio_gap"] for s, v in rec.steps.items()}
    for step in (0, 3, 6):  # the first step of a round: the policy that sampled it, unchanged
        assert gaps[step] < 1e-5, f"step {step}: |ratio - 1| = {gaps[step]}"
    for step in (1, 2, 4, 5, 7, 8):  # later steps of a round: the policy has moved away from the behaviour
        assert gaps[step] > 1e-4, f"step {step}: ratio still 1 ({gaps[step]})"
    # the round after an update is sampled by the updated policy: the rounds differ
    assert [r["completion_ids"] for r in rounds["round_00000"]] != [r["completion_ids"] for r in rounds["round_00001"]]


def test_kill_mid_round_and_resume_reproduces_the_uninterrupted_run(smoke_cfg, models, tmp_path):
    model = models["warm"]
    full = Recorder()
    _run(smoke_cfg, model, tmp_path / "full", full)
    run = tmp_path / "killed"
    first = Recorder(kill_at=5)  # last checkpoint: step 4, inside round 1 (steps 3-5)
    with pytest.raises(Killed):
        _run(smoke_cfg, model, run, first)
    assert torch.load(find_last(run / "checkpoints"), weights_only=True)["global_step"] == 4
    second = Recorder(kill_at=7)  # resumes at step 4 (round 1 read back from disk); last checkpoint: step 6
    with pytest.raises(Killed):
        _run(smoke_cfg, model, run, second)
    third = Recorder()
    policy = _run(smoke_cfg, model, run, third)
    assert sorted(second.steps) == [4, 5, 6] and sorted(third.steps) == [6, 7, 8]
    for rec in (first, second, third):
        for step, got in rec.steps.items():
            if "loss" not in got:
                continue
            want = full.steps[step]
            assert torch.equal(got["rows"], want["rows"]), f"step {step}: different examples"
            assert got["lr"] == want["lr"]
            assert torch.equal(got["loss"], want["loss"]), f"step {step}: loss {got['loss']} != {want['loss']}"
    a, b = _records(tmp_path / "full"), _records(run)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    final, resumed = load_file(tmp_path / "full" / "policy" / "model.safetensors"), load_file(policy / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_behaviour_logprobs_equal_a_float64_forward_at_temperature_one(models):
    tok = load_tokenizer(models["plain"])
    model = load_model(models["plain"], "float32")
    samples = HFGenerator(model, tok, batch_size=8, max_new_tokens=10, progress=False).sample(
        ["3+4=", "12-5="], n=3, temperature=1.7, seed=1)
    scored = score_samples(model, samples, tok.pad_token_id, batch_size=4)
    model64 = load_model(models["plain"], "float32").double().eval()
    for s in samples:
        ids = torch.tensor([s.prompt_ids + s.completion_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model64(ids).logits[0, :-1], -1)
        want = logp[torch.arange(len(s.prompt_ids) - 1, ids.shape[1] - 1), ids[0, len(s.prompt_ids):]]
        assert len(s.logprobs) == len(s.completion_ids)
        torch.testing.assert_close(torch.tensor(s.logprobs, dtype=torch.float64), want, atol=2e-5, rtol=0)
    assert scored.projected == sum(len(s.completion_ids) for s in samples)


def _record(**over):
    r = {"problem_id": "p", "prompt": "1+1=", "completion": "2", "reward": 1.0, "schema_version": 2,
         "prompt_ids": [1, 2, 3], "completion_ids": [4, 5], "behaviour_logprobs": [-0.5, -0.1]}
    r.update(over)
    return r


@pytest.mark.parametrize("over, problem", [
    ({"behaviour_logprobs": [-0.5]}, "one log-prob per completion id"),
    ({"behaviour_logprobs": [-0.5, 0.3]}, "value 1 is 0.3"),
    ({"behaviour_logprobs": [-0.5, float("nan")]}, "value 1 is nan"),
    ({"prompt_ids": None, "completion_ids": None}, "given without completion_ids"),
])
def test_bad_behaviour_logprobs_name_the_record_and_field(over, problem):
    check_trajectory(_record(), "t.jsonl", 0)
    with pytest.raises(RecordError, match=rf"t.jsonl.*record 3.*behaviour_logprobs.*{problem}"):
        check_trajectory(_record(**over), "t.jsonl", 3)


def test_behaviour_follows_rows_and_truncation(models):
    tok = load_tokenizer(models["plain"])
    traj = [{"problem_id": "p", "prompt": "1+1=", "completion": c, "reward": r, "prompt_ids": [5, 6],
             "completion_ids": ids, "behaviour_logprobs": lp}
            for c, r, ids, lp in (("2", 1.0, [7, 8, 9], [-1.0, -2.0, -3.0]), ("3", 0.0, [7, 10], [-4.0, -5.0]))]
    pairs = TrajectoryDataModule(tok, "pairs", trajectories=traj, max_length=4, overlong="truncate")
    pairs.setup()
    (ex,) = pairs.train_set  # room 2: the chosen completion and its log-probs cut to 2 tokens together
    assert ex["chosen_ids"] == [7, 8] and ex["chosen_behaviour"] == [-1.0, -2.0]
    assert row_values(ex, "pairs", "behaviour") == [-1.0, -2.0, -4.0, -5.0]  # chosen row, then rejected
    groups = TrajectoryDataModule(tok, "groups", trajectories=traj, max_length=16)
    groups.setup()
    assert row_values(groups.train_set[0], "groups", "behaviour") == [-1.0, -2.0, -3.0, -4.0, -5.0]


def test_offline_runs_keep_their_identity(smoke_cfg):
    cfg = train_parts(smoke_cfg()).config
    offline = {k: v for k, v in cfg.items() if k != "rollout"}
    offline["train"] = {k: v for k, v in cfg["train"].items() if k != "rollout_every"}
    assert config_hash(cfg) == config_hash(offline)  # runs made before rollouts keep their directories
    online = train_parts(smoke_cfg("train.rollout_every=2")).config
    assert "rollout" in result_config(online) and config_hash(online) != config_hash(cfg)
    assert config_hash(train_parts(smoke_cfg("train.rollout_every=2", "rollout.k=2")).config) != config_hash(online)


@pytest.mark.parametrize("over, key", [
    (["data.trajectories=x.jsonl"], "data.trajectories: x.jsonl is given, but train.rollout_every=2"),
    (["train.precompute_reference=true"], "precompute_reference: true, but rollout_every=2"),
    (["trainer=fsdp"], "train.rollout_every: 2: rollouts sample with the whole policy on one device"),
])
def test_rollouts_refuse_what_they_cannot_honour(smoke_cfg, tmp_path, over, key):
    (tmp_path / "x.jsonl").write_text("")
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises((ConfigError, ValueError), match=key):
            train_parts(smoke_cfg("train.rollout_every=2", *over))
    finally:
        os.chdir(cwd)


def test_ledger_prices_every_round_and_its_scoring(smoke_cfg, models, tmp_path):
    from fpa import ledger

    _run(smoke_cfg, models["warm"], tmp_path / "run", Recorder(), "train.max_steps=3")
    tok = load_tokenizer(models["plain"])
    entry = ledger.rollout_entry(ledger.ModelSize.of_pretrained(models["plain"]), tmp_path / "run" / "rollouts", tok)
    (records,) = _records(tmp_path / "run").values()
    generated = sum(r["n_tokens"] for r in records)
    sampled = sum(len(r["prompt_ids"]) + r["n_tokens"] for r in records)
    scored = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in records)
    assert entry["tokens"]["generated"] == generated and entry["tokens"]["policy_forward"] == sampled + scored
    assert entry["flops"] > 0 and entry["seconds"] == pytest.approx(json.loads(
        (tmp_path / "run" / "rollouts" / "round_00000" / "stats.json").read_text())["generation_seconds"])


class StandInEngine:
    """A colocated engine without vLLM: its own copy of the model, reloaded through the same weight stream
    ``VLLMGenerator.update_weights`` sends (:func:`fpa.generation.policy_weights.hf_named_weights`)."""

    def __init__(self, model_path, tokenizer, **options):
        self.model, self.tokenizer, self.options = load_model(model_path, "float32"), tokenizer, options
        self.reloads, self.tokens_per_second = [], 0.0

    def update_weights(self, policy) -> int:
        from fpa.generation.policy_weights import hf_named_weights

        with hf_named_weights(policy) as weights:
            named = {k: v.detach().clone() for k, v in weights}
        self.model.load_state_dict(named)
        self.reloads.append(sum(float(v.double().sum()) for v in named.values()))
        return len(named)

    def sample(self, prompts, n=1, temperature=1.0, top_p=1.0, seed=0, desc=""):
        gen = HFGenerator(self.model, self.tokenizer, batch_size=self.options["batch_size"],
                          max_new_tokens=self.options["max_new_tokens"], progress=False)
        out = gen.sample(prompts, n=n, temperature=temperature, top_p=top_p, seed=seed, desc=desc)
        self.tokens_per_second = gen.tokens_per_second
        return out


def test_vllm_rollouts_reload_the_policy_every_round(smoke_cfg, models, tmp_path, monkeypatch):
    from fpa.generation.vllm_backend import VLLMGenerator

    engines = []

    def for_rollouts(model_path, tokenizer, **options):
        engines.append(StandInEngine(model_path, tokenizer, **options))
        return engines[-1]

    monkeypatch.setattr(VLLMGenerator, "for_rollouts", staticmethod(for_rollouts))
    _run(smoke_cfg, models["warm"], tmp_path / "hf", Recorder())
    _run(smoke_cfg, models["warm"], tmp_path / "vllm", Recorder(), "rollout.backend=vllm")
    (engine,) = engines  # loaded once, from the reference
    assert len(engine.reloads) == 3 and len(set(engine.reloads)) == 3  # before each round, each time new weights
    # the engine samples with the weights the hf path samples with: the same rounds, id for id
    hf, vllm = _records(tmp_path / "hf"), _records(tmp_path / "vllm")
    assert hf.keys() == vllm.keys()
    for name in hf:
        for a, b in zip(hf[name], vllm[name], strict=True):
            assert a["completion_ids"] == b["completion_ids"] and a["reward"] == b["reward"]
            assert a["behaviour_logprobs"] == pytest.approx(b["behaviour_logprobs"], abs=1e-6)
            assert (a["generator"]["backend"], b["generator"]["backend"]) == ("hf", "vllm")


def test_each_training_seed_draws_its_own_rounds(smoke_cfg, models, tmp_path):
    """Training seeds are replications online too: with one batch per round (GRPO) the order within a round
    changes nothing, so the rounds' problems and samples must follow ``seed``; ``rollout.seed`` pins them."""
    from fpa.generation.rollouts import round_problems

    seeds = {s: train_parts(smoke_cfg("train.rollout_every=2", f"seed={s}")).rollout.seed for s in (0, 1)}
    assert seeds == {0: 0, 1: 1}
    assert train_parts(smoke_cfg("train.rollout_every=2", "seed=1", "rollout.seed=0")).rollout.seed == 0
    pool = list(range(64))
    assert round_problems(pool, 8, seeds[0], 0) != round_problems(pool, 8, seeds[1], 0)
    problems = {}
    for s in (0, 1):
        run_dir = tmp_path / f"seed{s}"
        _run(smoke_cfg, models["warm"], run_dir, Recorder(), f"seed={s}", "train.max_steps=2")
        (records,) = _records(run_dir).values()
        problems[s] = [r["problem_id"] for r in records]
    assert problems[0] != problems[1]
