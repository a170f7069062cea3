"""The one place that turns hidden states into per-token completion log-probs.

For every completion token it returns log π_θ (with gradient), log π_ref and the future policy's
log π̂ = log_softmax((1+λ)·h_θ − λ·h_ref) (both without gradient), where h are the logits.

Logits are produced chunk by chunk from the final hidden states, and only at completion
positions, so no ``[batch, seq, vocab]`` tensor is ever materialised. The backward pass
recomputes each chunk's logits instead of storing them (the fused linear + log-softmax trick),
so training memory grows with the chunk, not with ``tokens × vocab``:

- **Chunk rows adapt to the vocabulary**: at most ``chunk_size`` rows and at most
  :data:`CHUNK_ELEMENTS` logits per chunk buffer (a 152k vocabulary gets 220-row chunks, a 32k one
  1,024-row chunks: 128 MiB of fp32 either way).
- **Buffers are allocated once per call and reused** (``torch.mm(..., out=)``): on CPU every fresh
  allocation above glibc's mmap threshold is a new mapping whose pages fault in on first touch,
  which cost as much as the ``exp`` itself.
- **No chunk-sized temporaries**: ``torch.logsumexp`` allocates one per call; instead
  ``log_softmax`` runs over row blocks into a scratch of at most :data:`SCRATCH_ELEMENTS`, which
  gives log p(target) directly and the log-normaliser as ``logit[y] − log p[y]``. The future logits
  are formed in place in the reference's buffer, ``lerp(ref, policy, 1+λ) = (1+λ)·policy − λ·ref``.

Forward peak beyond the inputs: two chunk buffers with a reference (policy, reference → future), one
without, and the scratch. The phases are labelled for ``torch.profiler`` (``fpa.logprobs.*``), which
is how ``benchmarks/logprob_memory.py --breakdown`` shows where the time of a chunk goes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
from torch import Tensor
from torch.profiler import record_function

CHUNK_ELEMENTS = 1 << 25  # logits per chunk buffer: 128 MiB in fp32
SCRATCH_ELEMENTS = 1 << 20  # the log-softmax scratch: at most this many elements (4 MiB in fp32), >= 1 row


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # bf16/fp16 logits are upcast per chunk; float64 stays float64 (tests compare in float64).
    return torch.promote_types(dtype, torch.float32)


def chunk_rows(chunk_size: int, vocab: int, n: int) -> int:
    """Rows per chunk: at most ``chunk_size``, at most ``CHUNK_ELEMENTS // vocab``, at most ``n``, at least 1."""
    return max(1, min(chunk_size, n, CHUNK_ELEMENTS // max(vocab, 1)))


def _logits_into(out: Tensor, hidden: Tensor, weight: Tensor) -> Tensor:
    """``out = hidden @ weightᵀ`` in ``out``'s dtype, without a chunk-sized temporary when the dtypes agree."""
    with record_function("fpa.logprobs.matmul"):
        if hidden.dtype == out.dtype and weight.dtype == out.dtype:
            return torch.mm(hidden, weight.T, out=out)
        return out.copy_(hidden @ weight.T)


def _target_logprob(logits: Tensor, tgt: Tensor, scratch: Tensor, out: Tensor) -> None:
    """``out[i] = log_softmax(logits[i])[tgt[i]]``, in row blocks through ``scratch`` (``logits`` untouched)."""
    for b in range(0, logits.shape[0], scratch.shape[0]):
        e = min(b + scratch.shape[0], logits.shape[0])
        s = scratch[: e - b]
        with record_function("fpa.logprobs.log_softmax"):
            torch.log_softmax(logits[b:e], -1, out=s)
        with record_function("fpa.logprobs.gather"):
            out[b:e] = s.gather(1, tgt[b:e]).squeeze(1)


class _ChunkedLogProbs(torch.autograd.Function):
    """log_softmax(hidden @ weightᵀ)[target] per row, chunked; optional reference/future outputs."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ref_hidden, ref_weight, lam, chunk_size):
        n, vocab = hidden.shape[0], weight.shape[0]
        dt = _compute_dtype(hidden.dtype)
        rows = chunk_rows(chunk_size, vocab, n)
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
            with record_function("fpa.logprobs.gather"):
                lse[s:e] = logits.gather(1, tgt).squeeze(1) - policy[s:e]
            if with_ref:
                ref_logits = _logits_into(ref_buf[: e - s], ref_hidden[s:e], ref_weight)
                _target_logprob(ref_logits, tgt, scratch, reference[s:e])
                if lam == 0:
                    future[s:e] = policy[s:e]
                else:
                    with record_function("fpa.logprobs.future"):
                        fut = ref_logits.lerp_(logits, 1 + lam)  # (1+λ)·policy − λ·reference, in place
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
        direct = weight.dtype == dt and hidden.dtype == dt and (grad_h is None or grad_h.is_contiguous())
        for s in range(0, n, rows):
            e = min(s + rows, n)
            go = grad_policy[s:e].to(dt)
            with record_function("fpa.logprobs.backward_recompute"):
                g = _logits_into(buf[: e - s], hidden[s:e], weight)
                # d log p_y / d logits = onehot(y) − softmax; scaled by the incoming gradient.
                g.sub_(lse[s:e, None]).exp_().mul_(-go[:, None])
                g[idx[: e - s], targets[s:e]] += go
            with record_function("fpa.logprobs.backward_matmul"):
                if need_h:
                    if direct:
                        torch.mm(g, weight, out=grad_h[s:e])
                    else:
                        grad_h[s:e] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    grad_w.addmm_(g.T, hidden[s:e].to(dt))
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None, None, None


def chunked_token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, ref_hidden: Tensor | None = None,
                           ref_weight: Tensor | None = None, lam: float = 0.0, chunk_size: int = 1024
                           ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Rows of ``hidden`` [N, H] and their next tokens ``targets`` [N] → (policy, reference, future) [N].

    ``policy`` carries gradient to ``hidden`` and ``weight``; ``reference`` and ``future`` are
    ``None`` unless ``ref_hidden``/``ref_weight`` are given, and never carry gradient.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if (ref_hidden is None) != (ref_weight is None):
        raise ValueError("ref_hidden and ref_weight go together")
    if ref_hidden is not None:
        ref_hidden, ref_weight = ref_hidden.detach(), ref_weight.detach()
    return _ChunkedLogProbs.apply(hidden, weight, targets, ref_hidden, ref_weight, float(lam), int(chunk_size))


def naive_token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
    """The full-logits computation, for tests and benchmarks only: materialises [N, vocab]."""
    return torch.log_softmax(hidden @ weight.T, -1).gather(1, targets[:, None]).squeeze(1)


def naive_completion_outputs(hidden: Tensor, weight: Tensor, targets: Tensor, ref_hidden: Tensor,
                             ref_weight: Tensor, lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """The three outputs of :func:`chunked_token_logprobs` from full ``[N, vocab]`` logits, by autograd.

    For tests (an independent computation) and for the benchmark's like-for-like baseline only.
    """
    logits = hidden @ weight.T
    policy = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    with torch.no_grad():
        ref_logits = ref_hidden @ ref_weight.T
        reference = torch.log_softmax(ref_logits, -1).gather(1, targets[:, None]).squeeze(1)
        fut_logits = (1 + lam) * logits.detach() - lam * ref_logits
        future = torch.log_softmax(fut_logits, -1).gather(1, targets[:, None]).squeeze(1)
    return policy, reference, future


@dataclass
class CompletionLogProbs:
    """Per-token log-probs over target positions [B, T-1]; zero wherever ``mask`` is False."""

    policy: Tensor
    mask: Tensor
    reference: Tensor | None = None
    future: Tensor | None = None


def _final_hidden(model, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None) -> Tensor:
    if position_ids is not None and bool(attention_mask.all()):
        # A packed row: attention within each sequence only, read from position_ids, with no 2D mask (an
        # all-ones mask would let sequences attend to each other); per-sequence SDPA unless flash-attention.
        from fpa.models.varlen_attention import packed_attention

        with packed_attention(model):
            return _body(model)(input_ids=input_ids, attention_mask=None, position_ids=position_ids,
                                use_cache=False).last_hidden_state
    kwargs = {"position_ids": position_ids} if position_ids is not None else {}
    return _body(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                        **kwargs).last_hidden_state


def _body(model):
    """The transformer body (no output layer) of a causal LM, or of a peft model's base (LoRA layers inside)."""
    from fpa.models.lora import is_peft_model

    if is_peft_model(model):
        return model.get_base_model().base_model
    return model.base_model


def _output_weight(model) -> Tensor:
    head = model.get_output_embeddings()
    if hasattr(head, "base_layer"):  # a peft-adapted output layer: its weight alone is not the layer
        raise NotImplementedError(f"{type(model).__name__}: an adapted output layer is not supported")
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError(f"{type(model).__name__}: an output layer with a bias is not supported")
    return head.weight


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except (RuntimeError, TypeError):  # a device type without autocast
        pass
    return None


def completion_logprobs(policy, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor,
                        reference=None, lam: float = 0.0, chunk_size: int = 1024,
                        position_ids: Tensor | None = None,
                        reference_context: Callable[[], ContextManager] | None = None) -> CompletionLogProbs:
    """Run the policy (with grad) and the reference (without) and score the completion tokens.

    ``reference_context``: entered around the reference's forward. With LoRA the reference is the
    policy itself and this disables its adapter (:func:`fpa.models.lora.adapter_disabled`).

    ``completion_mask[b, t]`` is True where token t belongs to the completion; prompt tokens and
    padding are never scored. Position t of the result scores token t+1 of ``input_ids``.

    Under autocast (``precision=bf16-mixed``) the chunked output layer runs in the autocast dtype
    with autocast off, so forward and backward use the same logits (softmax statistics in fp32).
    Every parameter is read here; a sharded (FSDP) model must call this inside its root forward
    (``fpa.module.OfflineRLModule.forward``), where the parameters are gathered.
    """
    mask = completion_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    targets = input_ids[:, 1:][mask]
    hidden = _final_hidden(policy, input_ids, attention_mask, position_ids)[:, :-1][mask]
    weight = _output_weight(policy)
    ref_hidden = ref_weight = None
    if reference is not None:
        with torch.no_grad(), (reference_context() if reference_context is not None else contextlib.nullcontext()):
            ref_hidden = _final_hidden(reference, input_ids, attention_mask, position_ids)[:, :-1][mask]
            ref_weight = _output_weight(reference)
    amp = _autocast_dtype(hidden.device.type)
    if amp is not None:
        hidden, weight = hidden.to(amp), weight.to(amp)
        if reference is not None:
            ref_hidden, ref_weight = ref_hidden.to(amp), ref_weight.to(amp)
        with torch.autocast(hidden.device.type, enabled=False):
            pol, ref, fut = chunked_token_logprobs(hidden, weight, targets, ref_hidden, ref_weight, lam=lam,
                                                   chunk_size=chunk_size)
    else:  # a reference in another dtype (bf16 next to an fp32 policy) is fine: logits are upcast per chunk
        pol, ref, fut = chunked_token_logprobs(hidden, weight, targets, ref_hidden, ref_weight, lam=lam,
                                               chunk_size=chunk_size)

    def scatter(values: Tensor | None) -> Tensor | None:
        if values is None:
            return None
        out = values.new_zeros(mask.shape)
        return out.masked_scatter(mask, values)

    return CompletionLogProbs(policy=scatter(pol), mask=mask, reference=scatter(ref), future=scatter(fut))
