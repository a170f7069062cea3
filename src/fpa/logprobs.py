"""The one place that turns hidden states into per-token completion log-probs.

For every completion token it returns log π_θ (with gradient), log π_ref and the future policy's
log π̂ = log_softmax((1+λ)·h_θ − λ·h_ref) (both without gradient), where h are the logits.

Logits are produced chunk by chunk from the final hidden states, and only at completion
positions, so no ``[batch, seq, vocab]`` tensor is ever materialised. The backward pass
recomputes each chunk's logits instead of storing them (the fused linear + log-softmax trick),
so training memory grows with ``chunk_size × vocab``, not ``tokens × vocab``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
from torch import Tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # bf16/fp16 logits are upcast per chunk; float64 stays float64 (tests compare in float64).
    return torch.promote_types(dtype, torch.float32)


class _ChunkedLogProbs(torch.autograd.Function):
    """log_softmax(hidden @ weightᵀ)[target] per row, chunked; optional reference/future outputs."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ref_hidden, ref_weight, lam, chunk_size):
        n = hidden.shape[0]
        dt = _compute_dtype(hidden.dtype)
        policy = hidden.new_empty(n, dtype=dt)
        lse = hidden.new_empty(n, dtype=dt)
        with_ref = ref_hidden is not None
        reference = hidden.new_empty(n, dtype=dt) if with_ref else None
        future = hidden.new_empty(n, dtype=dt) if with_ref else None
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            tgt = targets[s:e, None]
            logits = (hidden[s:e] @ weight.T).to(dt)
            lse[s:e] = torch.logsumexp(logits, -1)
            policy[s:e] = logits.gather(1, tgt).squeeze(1) - lse[s:e]
            if with_ref:
                ref_logits = (ref_hidden[s:e] @ ref_weight.T).to(dt)
                reference[s:e] = ref_logits.gather(1, tgt).squeeze(1) - torch.logsumexp(ref_logits, -1)
                if lam == 0:
                    future[s:e] = policy[s:e]
                else:
                    fut_logits = ref_logits.mul_(-lam).add_(logits, alpha=1 + lam)
                    future[s:e] = fut_logits.gather(1, tgt).squeeze(1) - torch.logsumexp(fut_logits, -1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size = chunk_size
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
        rows = torch.arange(min(ctx.chunk_size, hidden.shape[0]), device=hidden.device)
        for s in range(0, hidden.shape[0], ctx.chunk_size):
            e = min(s + ctx.chunk_size, hidden.shape[0])
            go = grad_policy[s:e].to(dt)
            # d log p_y / d logits = onehot(y) − softmax; scaled by the incoming gradient.
            g = (hidden[s:e] @ weight.T).to(dt).sub_(lse[s:e, None]).exp_().mul_(-go[:, None])
            g[rows[: e - s], targets[s:e]] += go
            if need_h:
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


@dataclass
class CompletionLogProbs:
    """Per-token log-probs over target positions [B, T-1]; zero wherever ``mask`` is False."""

    policy: Tensor
    mask: Tensor
    reference: Tensor | None = None
    future: Tensor | None = None


def _final_hidden(model, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None) -> Tensor:
    kwargs = {"position_ids": position_ids} if position_ids is not None else {}
    if position_ids is not None and bool(attention_mask.all()):
        # A packed row: transformers masks attention per sequence from position_ids only when no
        # 2D mask is given (an all-ones mask would let sequences attend to each other).
        attention_mask = None
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
