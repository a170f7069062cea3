"""vLLM rollouts' weight reload (VLLMGenerator.update_weights, fpa.generation.policy_weights) against stand-in
engines that record what their model's ``load_weights`` receives; vLLM itself is not needed."""

from __future__ import annotations

import copy
import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from fpa.generation.policy_weights import FSDP_REFUSAL, hf_named_weights
from fpa.generation.vllm_backend import MODEL_PATHS, VLLMGenerator
from fpa.models.lora import LoraSettings
from fpa.models.loading import load_model

LORA = LoraSettings(r=4, alpha=8, target_modules=("q_proj", "v_proj", "o_proj", "down_proj"))


def checksum(t: torch.Tensor) -> float:
    """Sum of the values weighted by position: changes with any value (and with a permutation of them)."""
    flat = t.detach().double().flatten()
    return float((flat * torch.linspace(1, 2, flat.numel(), dtype=torch.float64)).sum())


class RecordingModel:
    """Stands in for the model inside vLLM: records (name, shape, checksum) when the weights arrive."""

    def __init__(self) -> None:
        self.received: list[tuple[str, tuple[int, ...], float]] = []
        self.calls = 0

    def load_weights(self, weights):
        self.calls += 1
        names = set()
        for name, t in weights:
            self.received.append((name, tuple(t.shape), checksum(t)))
            names.add(name)
        return names


class Engine(SimpleNamespace):
    def reset_prefix_cache(self) -> bool:
        self.resets = getattr(self, "resets", 0) + 1
        return True


def v0_engine(model):
    return Engine(llm_engine=SimpleNamespace(model_executor=SimpleNamespace(
        driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=model)))))


def v1_engine(model):
    return Engine(llm_engine=SimpleNamespace(model_executor=SimpleNamespace(
        driver_worker=SimpleNamespace(worker=SimpleNamespace(model_runner=SimpleNamespace(model=model))))))


def rpc_engine(model):
    """V1 with out-of-process workers: only ``collective_rpc(fn, args)``, which runs ``fn(worker, *args)``."""
    worker = SimpleNamespace(model_runner=SimpleNamespace(model=model))
    return Engine(collective_rpc=lambda method, timeout=None, args=(), kwargs=None: [method(worker, *args)])


def expected(state: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], float]]:
    return sorted((n, tuple(t.shape), checksum(t)) for n, t in state.items())


@pytest.fixture
def policy(tiny_path):
    return load_model(tiny_path, "float32")


def lora_policy(tiny_path):
    torch.manual_seed(0)
    model = LORA.wrap(load_model(tiny_path, "float32"))
    with torch.no_grad():  # B is zero at init (the merge would change nothing): make it matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("make_engine", [v0_engine, v1_engine, rpc_engine], ids=["v0", "v1", "collective_rpc"])
def test_every_weight_arrives_once_with_its_hf_name_and_value(policy, make_engine):
    model = RecordingModel()
    gen = VLLMGenerator(make_engine(model), tokenizer=None)
    n = gen.update_weights(policy)
    state = policy.state_dict()
    assert n == len(state) == len(model.received) and model.calls == 1
    assert sorted(model.received) == expected(state)
    assert len({name for name, _, _ in model.received}) == n  # each once
    assert {n for n, _ in policy.named_parameters()} <= {name for name, _, _ in model.received}
    assert gen.llm.resets == 1


def test_pushes_follow_in_place_updates(policy):
    model = RecordingModel()
    gen = VLLMGenerator(v0_engine(model), tokenizer=None)
    gen.update_weights(policy)
    before = sorted(model.received)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # what an optimizer step does: in place
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    model.received.clear()
    gen.update_weights(policy)
    after = sorted(model.received)
    assert after == expected(policy.state_dict())
    assert all(a[2] != b[2] for a, b in zip(after, before))  # every tensor moved, and the push shows it
    assert gen.llm.resets == 2


def test_an_engine_without_load_weights_is_a_clear_error(policy):
    with pytest.raises(RuntimeError, match="cannot reload weights") as e:
        VLLMGenerator(SimpleNamespace(llm_engine=SimpleNamespace()), tokenizer=None).update_weights(policy)
    for path in MODEL_PATHS:
        assert path in str(e.value)
    assert "collective_rpc" in str(e.value)


def test_no_prefix_cache_reset_where_the_engine_has_none(policy):
    model = RecordingModel()
    llm = SimpleNamespace(llm_engine=v0_engine(model).llm_engine)
    assert VLLMGenerator(llm, tokenizer=None).update_weights(policy) == len(policy.state_dict())


def test_lora_policy_pushes_merged_base_weights_and_is_unmerged_after(tiny_path):
    policy = lora_policy(tiny_path)
    ids = torch.tensor([[3, 5, 7, 9, 11, 4]])
    with torch.no_grad():
        out_before = policy(input_ids=ids).logits
    merged = copy.deepcopy(policy).merge_and_unload().state_dict()
    base = load_model(tiny_path, "float32").state_dict()

    model = RecordingModel()
    n = VLLMGenerator(v1_engine(model), tokenizer=None).update_weights(policy)
    names = [name for name, _, _ in model.received]
    assert n == len(names) == len(merged) == len(set(names))
    assert not any("lora_" in name or "base_layer" in name or name.startswith("base_model") for name in names)
    got = dict((name, c) for name, _, c in model.received)
    for name, t in merged.items():  # the merged values, within float32 rounding of W + s·B·A
        assert got[name] == pytest.approx(checksum(t), rel=1e-6, abs=1e-6), name
    adapted = [k for k in base if any(f"{m}.weight" in k for m in LORA.target_modules)]
    assert adapted and all(got[k] != pytest.approx(checksum(base[k]), rel=1e-4) for k in adapted)  # merge mattered
    assert all(got[k] == checksum(base[k]) for k in base if k not in adapted)

    assert not any(getattr(m, "merged", False) for m in policy.modules())
    with torch.no_grad():
        out_after = policy(input_ids=ids).logits
    torch.testing.assert_close(out_after, out_before, rtol=0, atol=1e-5)


def test_lora_policy_is_unmerged_when_loading_fails(tiny_path):
    policy = lora_policy(tiny_path)
    weights = {k: v.clone() for k, v in policy.state_dict().items()}

    class Failing:
        def load_weights(self, weights):
            next(iter(weights))
            raise RuntimeError("engine out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        VLLMGenerator(v0_engine(Failing()), tokenizer=None).update_weights(policy)
    assert not any(getattr(m, "merged", False) for m in policy.modules())
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=1e-6)


def test_sharded_policy_is_refused_before_anything_is_pushed(policy):
    from torch.distributed.fsdp import FSDPModule

    layer = policy.model.layers[0]
    layer.__class__ = type("FSDPLlamaDecoderLayer", (FSDPModule, type(layer)), {})  # what fully_shard does
    model = RecordingModel()
    with pytest.raises(NotImplementedError, match="not supported under trainer=fsdp"):
        VLLMGenerator(v0_engine(model), tokenizer=None).update_weights(policy)
    assert model.received == [] and FSDP_REFUSAL.startswith("generate.backend=vllm")


def test_dtensor_parameters_are_refused(policy, tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        head = policy.lm_head
        head.weight = torch.nn.Parameter(distribute_tensor(head.weight.detach().clone(), mesh))
        with pytest.raises(NotImplementedError, match="trainer=fsdp"):
            with hf_named_weights(policy):
                pass
    finally:
        dist.destroy_process_group()


class FakeLLM:
    built: list[dict] = []

    def __init__(self, **kwargs):
        FakeLLM.built.append({**kwargs, "multiprocessing": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")})


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    FakeLLM.built.clear()
    return FakeLLM.built


def test_for_rollouts_builds_an_in_process_engine_leaving_the_gpu_to_training(fake_vllm, tiny_path):
    gen = VLLMGenerator.for_rollouts(tiny_path, None, dtype="bfloat16", batch_size=32, max_new_tokens=12)
    assert isinstance(gen.llm, FakeLLM) and gen.max_new_tokens == 12 and not gen.progress
    built = fake_vllm[-1]
    assert built["gpu_memory_utilization"] == 0.3 and built["max_num_seqs"] == 32 and built["dtype"] == "bfloat16"
    assert built["multiprocessing"] == "0" and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ

    VLLMGenerator.for_rollouts(tiny_path, None, gpu_memory_utilization=0.5, enforce_eager=True)
    assert fake_vllm[-1]["gpu_memory_utilization"] == 0.5 and fake_vllm[-1]["enforce_eager"] is True


def test_for_rollouts_keeps_a_multiprocessing_setting_from_the_environment(fake_vllm, tiny_path, monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    VLLMGenerator.for_rollouts(tiny_path, None)
    assert fake_vllm[-1]["multiprocessing"] == "1" and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
