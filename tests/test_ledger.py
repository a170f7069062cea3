"""The compute ledger: the FLOP formula by hand on a tiny Llama, the train step's token counters, the report plot."""

from __future__ import annotations

import json

import pytest
import torch

from fpa.data.datamodule import TrajectoryDataModule
from fpa.ledger import ModelSize, Pass, entry, generation_entry, ledger
from fpa.models.char_tokenizer import build_char_tokenizer
from fpa.module import OfflineRLModule
from fpa.objectives.dpo import DPO
from fpa.objectives.sft import SFT

H, I, LAYERS, HEADS, KV, V = 16, 40, 2, 4, 2, 50


def _llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=LAYERS,
                                        num_attention_heads=HEADS, num_key_value_heads=KV, vocab_size=V,
                                        max_position_embeddings=64, tie_word_embeddings=tied))


@pytest.mark.parametrize("tied", [False, True])
def test_flop_formula_by_hand_on_a_tiny_llama(tied):
    size = ModelSize.of(_llama(tied))
    kv = H // HEADS * KV
    per_layer = H * H + 2 * H * kv + H * H + 3 * H * I + 2 * H  # q, k, v, o, gate/up/down, two RMSNorms
    assert size == ModelSize(params=LAYERS * per_layer + H, head=V * H, n_layers=LAYERS, d_model=H)  # + final norm
    # two sequences of 5 and 3 tokens, 4 of them projected: 2·N·8 + 2·V·H·4 + 2·layers·d·(25 + 9)
    fwd = Pass()
    fwd.add([5, 3], projected=4)
    want = 2 * size.params * 8 + 2 * V * H * 4 + 2 * LAYERS * H * 34
    assert fwd.flops(size) == want
    e = entry(size, seconds=1.0, policy=fwd, reference=fwd, backward=fwd)
    assert e["flops"] == 4 * want and e["tokens"] == {"generated": 0, "policy_forward": 8, "reference_forward": 8,
                                                      "backward": 8}
    # generation: prompt 3 + 2 sampled tokens, one sample: prefill and decode priced as one 5-token sequence
    g = generation_entry(size, [(3, 2)], seconds=2.0, cached=True)
    assert g["tokens"]["generated"] == 2 and g["tokens"]["policy_forward"] == 5 and g["cached"]
    assert g["flops"] == 2 * size.params * 5 + 2 * V * H * 2 + 2 * LAYERS * H * 25
    total = ledger({"generate": g, "train": e})["total"]
    assert total["flops"] == g["flops"] + e["flops"] and total["cached_flops"] == g["flops"]
    assert total["seconds"] == 3.0 and total["tokens"]["policy_forward"] == 13


def _pairs(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        a = "".join(chr(97 + t) for t in torch.randint(0, 26, (int(torch.randint(3, 12, (1,), generator=g)),),
                                                      generator=g).tolist())
        b = "".join(chr(97 + t) for t in torch.randint(0, 26, (int(torch.randint(3, 12, (1,), generator=g)),),
                                                      generator=g).tolist())
        out.append({"problem_id": str(i), "prompt": f"{i}+1=", "chosen": a, "rejected": b})
    return out


def _expected(batches, prefix=""):
    tokens = projected = squared = 0
    for b in batches:
        lengths = b["attention_mask"].sum(-1)
        tokens += int(lengths.sum())
        squared += int((lengths ** 2).sum())
        projected += int(b["completion_mask"].sum())
    return [tokens, projected, squared]


@pytest.mark.parametrize("pack", [False, True])
def test_train_step_counters_match_the_batch_masks(tiny_path, pack):
    dm = TrajectoryDataModule(build_char_tokenizer(), "pairs", examples=_pairs(6), batch_size=3, max_length=64,
                              pack=pack)
    dm.setup()
    batches = list(dm.train_dataloader())[:2]
    assert ("packed_input_ids" in batches[0]) == pack
    assert any(bool((b["attention_mask"] == 0).any()) for b in batches)  # padded rows: padding must not count
    module = OfflineRLModule(tiny_path, DPO())
    module.train()
    for b in batches:
        module.objective_inputs(b)
    with torch.no_grad():  # not a training step: not counted
        module.objective_inputs(batches[0])
    want = _expected(batches)
    for kind in ("policy_forward", "reference_forward", "backward"):
        assert module.ledger_counts[kind].tolist() == want, kind
    # the objective without a reference: no reference forward
    sft = OfflineRLModule(tiny_path, SFT())
    sft.train()
    dm_sft = TrajectoryDataModule(build_char_tokenizer(), "correct", batch_size=3, max_length=64, examples=[
        {"problem_id": str(i), "prompt": f"{i}=", "completion": "abc" * (i + 1)} for i in range(3)])
    dm_sft.setup()
    b = next(iter(dm_sft.train_dataloader()))
    sft.objective_inputs(b)
    assert "reference_forward" not in sft.ledger_counts and sft.ledger_counts["backward"].tolist() == _expected([b])


def test_counters_survive_a_checkpoint(tiny_path):
    module = OfflineRLModule(tiny_path, SFT())
    module.ledger_counts = {"policy_forward": torch.tensor([10, 4, 60]), "backward": torch.tensor([10, 4, 60])}
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    resumed = OfflineRLModule(tiny_path, SFT())
    resumed.on_load_checkpoint(json.loads(json.dumps(ckpt)))
    resumed.ledger_counts = {"policy_forward": torch.tensor([1, 1, 1])}
    got = resumed._global_counts(lambda t: t)
    assert got["policy_forward"] == [11, 5, 61] and got["backward"] == [10, 4, 60]
    assert got["reference_forward"] == [0, 0, 0]
