"""Prototype of the proposed ``fpa.logprobs._ChunkedLogProbs`` (see ``logprobs_lowmem.patch``), for benchmarks.

Same inputs, outputs and gradients as ``fpa.logprobs.chunked_token_logprobs``. What changes:

1. **No ``torch.logsumexp``.** It allocates a fresh ``[chunk, vocab]`` temporary for ``exp(x − max)``
   on every call (three calls per chunk with a reference and λ > 0). Row blocks of
   ``torch.log_softmax(..., out=scratch)`` into one small ``[block, vocab]`` scratch give the
   log-prob of the target directly (and the log-normaliser as ``logit[y] − logp[y]``), with no
   chunk-sized temporary. The future logits are formed in place in the reference's buffer.
2. **Chunk buffers are allocated once per call and reused** (``torch.mm(..., out=buf)``) instead
   of once per chunk. On CPU every allocation above glibc's mmap threshold (≤ 32 MiB) is a fresh
   mapping whose pages fault in on first touch — ~5 ns per element, as much as the exp itself.
3. **Chunk rows adapt to the vocabulary** (``rows_for``): at most ``chunk_size`` rows and at most
   ``CHUNK_ELEMENTS`` logits per buffer, so a 152k vocabulary gets ~220-row chunks instead of
   1024-row ones (the same 128 MiB fp32 per buffer as 1024 rows of a 32k vocabulary).

Forward peak beyond the inputs: 2 chunk buffers with a reference (policy, reference/future) and 1
without, plus a scratch of at most ``SCRATCH_ELEMENTS`` — against 3 and 2 chunk-sized tensors before.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 25  # logits per chunk buffer: 128 MiB in fp32
SCRATCH_ELEMENTS = 1 << 20  # the log_softmax scratch: at most this many elements (4 MiB fp32), >= 1 row


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def rows_for(chunk_size: int, vocab: int, n: int) -> int:
    return max(1, min(chunk_size, n, CHUNK_ELEMENTS // max(vocab, 1)))


def _logits_into(out: Tensor, hidden: Tensor, weight: Tensor) -> Tensor:
    """``out = hidden @ weightᵀ`` in ``out``'s dtype, without a chunk-sized temporary when dtypes agree."""
    if hidden.dtype == out.dtype and weight.dtype == out.dtype:
        return torch.mm(hidden, weight.T, out=out)
    return out.copy_(hidden @ weight.T)


def _target_logprob(logits: Tensor, tgt: Tensor, scratch: Tensor, out: Tensor) -> None:
    """out[i] = log_softmax(logits[i])[tgt[i]], in row blocks through ``scratch`` (logits untouched)."""
    for b in range(0, logits.shape[0], scratch.shape[0]):
        e = min(b + scratch.shape[0], logits.shape[0])
        s = scratch[: e - b]
        torch.log_softmax(logits[b:e], -1, out=s)
        out[b:e] = s.gather(1, tgt[b:e]).squeeze(1)


class _ChunkedLogProbsLowMem(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ref_hidden, ref_weight, lam, chunk_size):
        n, vocab = hidden.shape[0], weight.shape[0]
        dt = _compute_dtype(hidden.dtype)
        rows = rows_for(chunk_size, vocab, n)
        policy = hidden.new_empty(n, dtype=dt)
        lse = hidden.new_empty(n, dtype=dt)
        with_ref = ref_hidden is not None
        reference = hidden.new_empty(n, dtype=dt) if with_ref else None
        future = hidden.new_empty(n, dtype=dt) if with_ref else None
        buf = hidden.new_empty(rows, vocab, dtype=dt)
        ref_buf = hidden.new_empty(rows, vocab, dtype=dt) if with_ref else None
        scratch = hidden.new_empty(max(1, min(rows, SCRATCH_ELEMENTS // max(vocab, 1))), vocab, dtype=dt)
        for s in range(0, n, rows):
            e = min(s + rows, n)
            tgt = targets[s:e, None]
            logits = _logits_into(buf[: e - s], hidden[s:e], weight)
            _target_logprob(logits, tgt, scratch, policy[s:e])
            lse[s:e] = logits.gather(1, tgt).squeeze(1) - policy[s:e]
            if with_ref:
                ref_logits = _logits_into(ref_buf[: e - s], ref_hidden[s:e], ref_weight)
                _target_logprob(ref_logits, tgt, scratch, reference[s:e])
                if lam == 0:
                    future[s:e] = policy[s:e]
                else:
                    fut = ref_logits.mul_(-lam).add_(logits, alpha=1 + lam)
                    _target_logprob(fut, tgt, scratch, future[s:e])
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.rows = rows
        if with_ref:
            ctx.mark_non_differentiable(reference, future)
        return policy, reference, future

    @staticmethod
    def backward(ctx, grad_policy, _grad_ref, _grad_future):
        hidden, weight, targets, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        dt = lse.dtype
        grad_w = torch.zeros(weight.shape, dtype=dt, device=weight.device) if need_w else None
        n, rows = hidden.shape[0], ctx.rows
        buf = hidden.new_empty(min(rows, n), weight.shape[0], dtype=dt)
        idx = torch.arange(min(rows, n), device=hidden.device)
        for s in range(0, n, rows):
            e = min(s + rows, n)
            go = grad_policy[s:e].to(dt)
            g = _logits_into(buf[: e - s], hidden[s:e], weight)
            g.sub_(lse[s:e, None]).exp_().mul_(-go[:, None])
            g[idx[: e - s], targets[s:e]] += go
            if need_h:
                if weight.dtype == dt and hidden.dtype == dt and grad_h.is_contiguous():
                    torch.mm(g, weight, out=grad_h[s:e])
                else:
                    grad_h[s:e] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(g.T, hidden[s:e].to(dt))
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None, None, None


def chunked_token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, ref_hidden: Tensor | None = None,
                           ref_weight: Tensor | None = None, lam: float = 0.0, chunk_size: int = 1024
                           ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Drop-in for ``fpa.logprobs.chunked_token_logprobs``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if (ref_hidden is None) != (ref_weight is None):
        raise ValueError("ref_hidden and ref_weight go together")
    if ref_hidden is not None:
        ref_hidden, ref_weight = ref_hidden.detach(), ref_weight.detach()
    return _ChunkedLogProbsLowMem.apply(hidden, weight, targets, ref_hidden, ref_weight, float(lam), int(chunk_size))


def install() -> None:
    """Make ``fpa.logprobs.completion_logprobs`` (and so ``OfflineRLModule``) use this implementation."""
    import fpa.logprobs

    fpa.logprobs.chunked_token_logprobs = chunked_token_logprobs
