"""LoRA adapters (model.lora): log-probs and gradients against merged weights computed by hand in float64,
the adapter-disabled reference, adapter-only checkpoints, adapter directories merged on load, config rules."""

from __future__ import annotations

import json

import pytest
import torch
from torch.func import functional_call
from transformers import AutoModelForCausalLM

from fpa.fpa import FuturePolicy
from fpa.guards import ConfigError
from fpa.models.loading import load_model
from fpa.models.export import export_merged
from fpa.models.lora import LoraSettings, is_adapter_dir
from fpa.models.tiny import build_tiny_model
from fpa.module import OfflineRLModule
from fpa.objectives.dpo import DPO

LORA = LoraSettings(r=4, alpha=8, target_modules=("q_proj", "v_proj", "o_proj", "down_proj"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=16, num_layers=2, num_heads=2,
                                intermediate_size=32, max_positions=64))


def _module(path, lam=1.0, lora=LORA):
    torch.manual_seed(0)
    m = OfflineRLModule(path, DPO(), FuturePolicy(lam=lam), lora=lora, chunk_size=5).double()
    with torch.no_grad():  # B is zero at init (the adapter starts as the base): make it matter
        for name, p in m.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return m


def _batch(vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, 11), generator=g)
    attn = torch.ones_like(ids)
    attn[1, 8:] = 0
    comp = torch.zeros_like(ids, dtype=torch.bool)
    comp[:, 4:] = True
    return ids, attn, comp


def _adapters(module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """plain weight name → (A, B) of the peft policy."""
    out = {}
    for name, p in module.policy.named_parameters():
        if "lora_A" in name:
            layer = name.split(".lora_A.")[0].removeprefix("base_model.model.")
            b = dict(module.policy.named_parameters())[name.replace("lora_A", "lora_B")]
            out[layer + ".weight"] = (p, b)
    return out


def _full_logprobs(model, weights, ids, attn, mask):
    logits = functional_call(model, weights, (ids,), {"attention_mask": attn}).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(2) * mask


def test_policy_logprobs_and_adapter_gradients_match_merged_weights_in_float64(tiny_dir):
    m = _module(tiny_dir)
    assert {n for n, p in m.policy.named_parameters() if p.requires_grad} == m.trainable_policy_keys
    assert all("lora_" in n for n in m.trainable_policy_keys) and len(m.trainable_policy_keys) == 2 * 4 * 2
    assert {id(p) for g in m.configure_optimizers()["optimizer"].param_groups for p in g["params"]} == \
        {id(p) for n, p in m.policy.named_parameters() if "lora_" in n}
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir).double().eval()
    ids, attn, comp = _batch(plain.config.vocab_size)
    pol, mask, _, _ = m(ids, attn, comp)
    g = torch.randn(pol.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lora_params = [p for ab in _adapters(m).values() for p in ab]
    got = torch.autograd.grad((pol * g).sum(), lora_params)

    adapters = {k: (a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_())
                for k, (a, b) in _adapters(m).items()}
    weights = dict(plain.named_parameters())
    for k, (a, b) in adapters.items():
        weights[k] = weights[k].detach() + LORA.scale * b @ a  # W + (α/r)·B·A
    want = _full_logprobs(plain, weights, ids, attn, mask)
    torch.testing.assert_close(pol, want.detach(), rtol=0, atol=1e-10)
    expected = torch.autograd.grad((want * g).sum(), [p for ab in adapters.values() for p in ab])
    for a, b in zip(got, expected):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_reference_is_the_base_and_future_anchors_to_it(tiny_dir):
    m = _module(tiny_dir, lam=1.0)
    m.train()
    assert m.reference is None  # no second copy
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir).double().eval()
    ids, attn, comp = _batch(plain.config.vocab_size, seed=3)
    pol, mask, ref, fut = m(ids, attn, comp)
    assert m.policy.training  # the reference's forward put the modes back
    base = _full_logprobs(plain, dict(plain.named_parameters()), ids, attn, mask)
    torch.testing.assert_close(ref, base.detach(), rtol=0, atol=1e-10)
    assert (pol - ref).abs().max() > 1e-3  # the adapter matters
    # future at λ=1: log_softmax(2·h_pol − h_ref), from the merged and the plain model's logits
    weights = dict(plain.named_parameters())
    for k, (a, b) in _adapters(m).items():
        weights[k] = weights[k] + LORA.scale * b @ a
    with torch.no_grad():
        h_pol = functional_call(plain, weights, (ids,), {"attention_mask": attn}).logits[:, :-1]
        h_ref = plain(ids, attention_mask=attn).logits[:, :-1]
    want = torch.log_softmax(2 * h_pol - h_ref, -1).gather(2, ids[:, 1:, None]).squeeze(2) * mask
    torch.testing.assert_close(fut, want, rtol=0, atol=1e-10)


def test_checkpoint_holds_only_the_adapters_and_round_trips(tiny_dir):
    m = _module(tiny_dir)
    state = m.state_dict()
    assert state and all(k.startswith("policy.") and "lora_" in k for k in state)
    assert len(state) == len(m.trainable_policy_keys)
    assert m.hparams["lora"] == {"r": 4, "alpha": 8, "dropout": 0.0,
                                 "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"]}
    fresh = OfflineRLModule(tiny_dir, DPO(), FuturePolicy(lam=1.0), lora=LORA).double()
    assert not torch.equal(fresh.state_dict()[next(k for k in state if "lora_B" in k)],
                           state[next(k for k in state if "lora_B" in k)])
    result = fresh.load_state_dict(state, strict=True)  # the frozen base is not expected
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_adapter_dir_merges_on_load_and_exports(tiny_dir, tmp_path):
    m = _module(tiny_dir)
    m.eval()
    out = tmp_path / "policy"
    m.policy.save_pretrained(out)  # what save_policy does on rank 0, with the tokenizer
    from fpa.models.loading import load_tokenizer

    load_tokenizer(tiny_dir).save_pretrained(out)
    assert is_adapter_dir(out) and not (out / "model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(__import__("pathlib").Path(tiny_dir).resolve())
    ids, attn, _ = _batch(m.policy.config.vocab_size, seed=5)
    with torch.no_grad():
        want = m.policy(input_ids=ids, attention_mask=attn).logits
        merged = load_model(str(out), frozen=True).double()
        assert not hasattr(merged, "peft_config") and type(merged).__name__ == "LlamaForCausalLM"
        torch.testing.assert_close(merged(input_ids=ids, attention_mask=attn).logits, want, rtol=1e-6, atol=1e-6)
        plain_dir = export_merged(out, tmp_path / "merged")
        assert not is_adapter_dir(plain_dir) and (plain_dir / "tokenizer_config.json").exists()
        again = AutoModelForCausalLM.from_pretrained(plain_dir).double()
        torch.testing.assert_close(again(input_ids=ids, attention_mask=attn).logits, want, rtol=1e-6, atol=1e-6)


def test_export_command_line(tiny_dir, tmp_path):
    from fpa.models.export import main

    assert main([tiny_dir, str(tmp_path / "x")]) == 2  # a plain model is not an adapter directory


def test_config_lora_is_checked_and_refused_with_fsdp():
    from testconfig import compose_config

    from fpa.config.parts import train_parts
    from fpa.stages.keys import pipeline_keys

    parts = train_parts(compose_config("model.lora={r:4,alpha:8}"))
    assert parts.model.lora == LoraSettings(r=4, alpha=8)
    plain = train_parts(compose_config())
    assert plain.model.lora is None
    assert pipeline_keys(parts) == pipeline_keys(plain)  # the warm start, sampling and eval do not read it
    from fpa.config.identity import config_hash

    assert config_hash(parts.config) != config_hash(plain.config)
    with pytest.raises(ConfigError, match=r"model\.lora: LoRA adapters are not supported with sharding"):
        train_parts(compose_config("model.lora={r:4}", "trainer=fsdp"))
    with pytest.raises(ConfigError, match=r"model\.lora\.r: must be an integer >= 1, got 0"):
        train_parts(compose_config("model.lora={r:0}"))
    with pytest.raises(ConfigError, match=r"model\.lora\.rank: unknown key \(valid keys: r, alpha"):
        train_parts(compose_config("model.lora={rank:4}"))
    with pytest.raises(ConfigError, match=r"model\.lora\.target_modules: lm_head cannot be adapted"):
        train_parts(compose_config("model.lora={target_modules:[q_proj,lm_head]}"))


def test_unknown_target_module_is_named(tiny_dir):
    with pytest.raises(ValueError, match=r"model\.lora\.target_modules: qkv_proj not in LlamaForCausalLM "
                                         r"\(its linear layers: .*q_proj"):
        OfflineRLModule(tiny_dir, DPO(), lora=LoraSettings(target_modules=("q_proj", "qkv_proj")))


def test_train_stage_with_lora_saves_an_adapter_dir_and_resumes(smoke_cfg, tmp_path, capsys):
    from fpa.config.parts import train_parts
    from fpa.stages.train import train_policy
    from fpa.testing import build_model, write_trajectories

    model = build_model(tmp_path / "model")
    traj = write_trajectories(tmp_path / "traj.jsonl", n_problems=4)
    common = ["objective=dpo", "fpa.lam=1", "data.batch_size=4", "callbacks.eval.every_n_steps=0",
              "callbacks.eval.at_end=false", "callbacks.checkpoint.every_n_train_steps=1", "model.lora={r:2}"]
    run = tmp_path / "run"
    out = train_policy(train_parts(smoke_cfg(*common, "train.max_steps=1")), str(model), traj, run, loggers=False)
    assert is_adapter_dir(out) and (out / "tokenizer_config.json").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    before = AutoModelForCausalLM.from_pretrained(model)
    after = load_model(str(out))
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))
    from fpa.cli.eval import checkpoint_to_model_dir  # fpa-eval on the run's .ckpt: base + adapters, merged

    converted, base = checkpoint_to_model_dir(run / "checkpoints" / "last.ckpt", tmp_path / "converted", None)
    assert base == str(model)
    for a, b in zip(after.parameters(), AutoModelForCausalLM.from_pretrained(converted).parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    capsys.readouterr()
    train_policy(train_parts(smoke_cfg(*common, "train.max_steps=2", "train.resume_override=true")), str(model),
                 traj, run, loggers=False)
    assert "resuming" in capsys.readouterr().out
