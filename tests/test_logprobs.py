"""The chunked log-prob path against the naive full-logits computation, in float64."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import fpa.logprobs as LP
from fpa.logprobs import (chunk_rows, chunked_token_logprobs, completion_logprobs, naive_completion_outputs,
                         naive_token_logprobs)

torch.manual_seed(0)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_equals_naive_values_and_gradients(chunk):
    n, h, v, lam = 53, 16, 97, 1.5
    hid = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    rh, rw = torch.randn(n, h, dtype=torch.float64), torch.randn(v, h, dtype=torch.float64)
    y = torch.randint(0, v, (n,))
    pol, ref, fut = chunked_token_logprobs(hid, w, y, rh, rw, lam=lam, chunk_size=chunk)
    naive = naive_token_logprobs(hid, w, y)
    torch.testing.assert_close(pol, naive, rtol=0, atol=1e-12)
    torch.testing.assert_close(ref, naive_token_logprobs(rh, rw, y), rtol=0, atol=1e-12)
    future = torch.log_softmax((1 + lam) * (hid @ w.T) - lam * (rh @ rw.T), -1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(fut, future.detach(), rtol=0, atol=1e-12)
    assert not ref.requires_grad and not fut.requires_grad
    g = torch.randn(n, dtype=torch.float64)
    gh, gw = torch.autograd.grad((pol * g).sum(), (hid, w))
    nh, nw = torch.autograd.grad((naive * g).sum(), (hid, w))
    torch.testing.assert_close(gh, nh, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, nw, rtol=0, atol=1e-12)


def test_gradcheck():
    hid = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 11, (9,))
    assert torch.autograd.gradcheck(lambda a, b: chunked_token_logprobs(a, b, y, chunk_size=4)[0], (hid, w))


def test_lambda_zero_future_is_exactly_policy():
    hid, w = torch.randn(20, 8), torch.randn(30, 8)
    y = torch.randint(0, 30, (20,))
    pol, _, fut = chunked_token_logprobs(hid, w, y, torch.randn(20, 8), torch.randn(30, 8), lam=0.0, chunk_size=6)
    assert torch.equal(pol, fut)


def test_chunk_rows_bounded_by_vocabulary():
    assert chunk_rows(1024, 32000, 10_000) == 1024  # 1,024 × 32k = 2**25 logits: the bound is the chunk size
    assert chunk_rows(1024, 152064, 10_000) == LP.CHUNK_ELEMENTS // 152064 == 220
    assert chunk_rows(256, 100, 37) == 37  # never more rows than the input
    assert chunk_rows(1, 10**9, 5) == 1  # at least one row


@pytest.mark.parametrize("lam", [0.0, 0.7, 3.0])
def test_vocabulary_bounded_chunks_and_scratch_blocks_equal_full_logits(monkeypatch, lam):
    """Chunks bounded by CHUNK_ELEMENTS (5 rows, ragged last one) and log-softmax in 2-row scratch blocks
    give the full-logits values and gradients (an independent autograd computation), in float64."""
    v = 50
    monkeypatch.setattr(LP, "CHUNK_ELEMENTS", v * 5)
    monkeypatch.setattr(LP, "SCRATCH_ELEMENTS", v * 2)
    g = torch.Generator().manual_seed(3)
    h = torch.randn(37, 8, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(v, 8, dtype=torch.float64, generator=g, requires_grad=True)
    rh, rw = torch.randn(37, 8, dtype=torch.float64, generator=g), torch.randn(v, 8, dtype=torch.float64, generator=g)
    y = torch.randint(0, v, (37,), generator=g)
    got = chunked_token_logprobs(h, w, y, rh, rw, lam=lam, chunk_size=1024)
    want = naive_completion_outputs(h, w, y, rh, rw, lam)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    scale = torch.randn(37, dtype=torch.float64, generator=g)
    for a, b in zip(torch.autograd.grad((got[0] * scale).sum(), (h, w)), torch.autograd.grad((want[0] * scale).sum(), (h, w))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_bf16_inputs_give_fp32_outputs_close_to_float64():
    g = torch.Generator().manual_seed(4)
    h, w = torch.randn(30, 16, generator=g), torch.randn(70, 16, generator=g) * 0.25
    rh, rw = h + 0.05 * torch.randn(30, 16, generator=g), w + 0.01 * torch.randn(70, 16, generator=g)
    y = torch.randint(0, 70, (30,), generator=g)
    hb, wb = h.bfloat16().requires_grad_(), w.bfloat16().requires_grad_()
    pol, ref, fut = chunked_token_logprobs(hb, wb, y, rh.bfloat16(), rw.bfloat16(), lam=1.0, chunk_size=8)
    assert pol.dtype == ref.dtype == fut.dtype == torch.float32
    want = naive_completion_outputs(hb.double(), wb.double(), y, rh.bfloat16().double(), rw.bfloat16().double(), 1.0)
    for a, b in zip((pol, ref, fut), want):  # the logits themselves are bf16 products (~3 significant digits)
        torch.testing.assert_close(a.double(), b.detach(), rtol=0, atol=2e-2)
    pol.sum().backward()
    assert hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16


def _tiny(seed):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("llama", vocab_size=41, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(cfg).double()


def test_completion_logprobs_masks_prompt_and_padding_against_full_logits():
    policy, reference = _tiny(0), _tiny(1)
    ids = torch.randint(1, 41, (3, 12))
    attn = torch.ones_like(ids)
    attn[1, 9:] = 0  # padding
    comp = torch.zeros_like(ids, dtype=torch.bool)
    comp[0, 4:] = True
    comp[1, 2:] = True
    comp[2, 11:] = True  # one completion token
    out = completion_logprobs(policy, ids, attn, comp, reference=reference, lam=0.5, chunk_size=5)
    full = torch.log_softmax(policy(input_ids=ids, attention_mask=attn).logits[:, :-1], -1)
    full_ref = torch.log_softmax(reference(input_ids=ids, attention_mask=attn).logits[:, :-1], -1)
    tgt = ids[:, 1:, None]
    expect_mask = comp[:, 1:] & attn[:, 1:].bool()
    assert torch.equal(out.mask, expect_mask)
    torch.testing.assert_close(out.policy, full.gather(2, tgt).squeeze(2) * expect_mask, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.reference, full_ref.gather(2, tgt).squeeze(2) * expect_mask, rtol=0, atol=1e-10)
    assert (out.policy[~expect_mask] == 0).all()
    # Gradient reaches the policy's parameters, never the reference's.
    out.policy.sum().backward()
    assert policy.model.embed_tokens.weight.grad is not None
    assert all(p.grad is None for p in reference.parameters())
