"""Per-sequence attention for packed rows: the same log-probs as padded rows, Σ Lᵢ² work, config restored."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import fpa.models.varlen_attention as V
from fpa.data.collate import Collator
from fpa.data.packing import unpack_logprobs
from fpa.logprobs import completion_logprobs


def test_segments_of_a_packed_row():
    assert V.segments([0, 1, 2, 0, 1, 0, 1, 2, 3]) == [(0, 3), (3, 5), (5, 9)]
    assert V.segments([0]) == [(0, 1)]


def _model(attn: str, kv_heads: int, seed: int):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("llama", vocab_size=37, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                               attn_implementation=attn)
    return AutoModelForCausalLM.from_config(cfg).double()


# eager attention computes its softmax in float32 (transformers upcasts it), hence its looser tolerance
@pytest.mark.parametrize("attn,kv_heads,tol", [("sdpa", 4, 1e-10), ("sdpa", 1, 1e-10), ("eager", 2, 1e-7)])
def test_packed_equals_padded_attending_within_each_sequence(monkeypatch, attn, kv_heads, tol):
    policy, reference = _model(attn, kv_heads, 0), _model(attn, kv_heads, 1)
    g = torch.Generator().manual_seed(2)
    lengths = [(3, 5), (4, 17), (2, 1), (5, 9)]  # (prompt, completion) of very different lengths
    examples = [{"prompt_ids": torch.randint(4, 37, (p,), generator=g).tolist(),
                 "completion_ids": torch.randint(4, 37, (c,), generator=g).tolist(), "label": i % 2 == 0}
                for i, (p, c) in enumerate(lengths)]
    batch = Collator("unpaired", 0, pack=True)(examples)
    assert batch["packed_input_ids"].shape == (1, sum(p + c for p, c in lengths))
    padded = completion_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                 reference=reference, lam=0.5)
    calls = []
    real = V.F.scaled_dot_product_attention
    monkeypatch.setattr(V.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(tuple(a[0].shape[:3])) or real(*a, **k))
    packed = unpack_logprobs(completion_logprobs(policy, batch["packed_input_ids"], batch["packed_attention_mask"],
                                                 batch["packed_completion_mask"], reference=reference, lam=0.5,
                                                 position_ids=batch["packed_position_ids"]), batch)
    # one call per layer and model, over the 4 sequences laid side by side (as long as the longest), not the row
    assert calls == [(4, 4, max(p + c for p, c in lengths))] * 4
    for field in ("policy", "reference", "future"):
        torch.testing.assert_close(getattr(packed, field), getattr(padded, field), rtol=0, atol=tol)
    assert policy.config._attn_implementation == attn  # restored after the packed forward
    (gp,) = torch.autograd.grad(packed.policy.sum(), [policy.model.layers[0].self_attn.q_proj.weight])
    (gd,) = torch.autograd.grad(padded.policy.sum(), [policy.model.layers[0].self_attn.q_proj.weight])
    torch.testing.assert_close(gp, gd, rtol=0, atol=tol)


def test_refuses_a_mask_or_missing_positions():
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="needs position_ids"):
        V.varlen_attention(None, q, q, q, None)
    with pytest.raises(ValueError, match="without an attention mask"):
        V.varlen_attention(None, q, q, q, torch.ones(1, 1, 4, 4), position_ids=torch.arange(4)[None])
