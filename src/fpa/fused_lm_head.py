"""Policy, reference and future log-probs from a fused linear–cross-entropy kernel (the GPU plan, issue 17).

The future policy's logits are one matrix product over a doubled hidden dimension::

    (1+λ)·e_θ·W_θᵀ − λ·e_ref·W_refᵀ  =  [(1+λ)·e_θ, −λ·e_ref] · [W_θ, W_ref]ᵀ

with ``hidden_cat = cat([(1+λ)e_θ, −λe_ref], dim=1)`` of shape [N, 2H] and ``weight_cat =
cat([W_θ, W_ref], dim=1)`` of shape [V, 2H]. So any per-token linear-cross-entropy kernel
``kernel(hidden [N, H], weight [V, H], targets [N]) -> NLL [N]`` gives all three outputs of
:func:`fpa.logprobs.chunked_token_logprobs` in three calls, none of which materialises ``[N, V]``.

Adapters: :func:`chunked_kernel` (pure torch, the project's own chunked path, for CPU tests),
:func:`liger_fused_kernel` (Liger-Kernel, Triton) and :func:`cce_kernel` (Apple's Cut
Cross-Entropy, Triton). The last two need a CUDA device and are imported only when asked for.

Costs of the concatenation: ``weight_cat`` is a fresh [V, 2H] copy of both output layers per call
(at V=152k, H=1536 in bf16: 0.93 GB), and in bf16 the scaled inputs ``(1+λ)e_θ`` and ``−λe_ref``
are rounded once more (exact when 1+λ and λ are powers of two, e.g. λ=1); the chunked path instead
mixes the logits in fp32 (``lerp``).
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch import Tensor

from fpa.logprobs import chunked_token_logprobs

Kernel = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``kernel(hidden [N, H], weight [V, H], targets [N]) -> per-token NLL [N]``, differentiable in hidden and weight."""

LIGER_MIN_VERSION = (0, 8, 2)


def future_product_inputs(hidden: Tensor, weight: Tensor, ref_hidden: Tensor, ref_weight: Tensor,
                          lam: float) -> tuple[Tensor, Tensor]:
    """``(hidden_cat [N, 2H], weight_cat [V, 2H])`` with ``hidden_cat @ weight_catᵀ`` the future logits.

    The reference is cast to the policy's dtype (a bf16 reference next to an fp32 policy is fine).
    """
    if hidden.shape[0] != ref_hidden.shape[0] or weight.shape[0] != ref_weight.shape[0]:
        raise ValueError(f"policy and reference disagree: hidden {tuple(hidden.shape)} vs {tuple(ref_hidden.shape)}, "
                         f"weight {tuple(weight.shape)} vs {tuple(ref_weight.shape)}")
    hidden_cat = torch.cat([hidden * (1 + lam), ref_hidden.to(hidden.dtype) * (-lam)], dim=1)
    weight_cat = torch.cat([weight, ref_weight.to(weight.dtype)], dim=1)
    return hidden_cat, weight_cat


def kernel_token_logprobs(kernel: Kernel, hidden: Tensor, weight: Tensor, targets: Tensor,
                          ref_hidden: Tensor | None = None, ref_weight: Tensor | None = None, lam: float = 0.0
                          ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Same contract as :func:`fpa.logprobs.chunked_token_logprobs`, computed by ``kernel``.

    ``policy`` carries gradient to ``hidden`` and ``weight``; ``reference`` and ``future`` (``None``
    without a reference) are computed under ``no_grad``, the future as one product over [N, 2H].
    """
    if (ref_hidden is None) != (ref_weight is None):
        raise ValueError("ref_hidden and ref_weight go together")
    policy = -kernel(hidden, weight, targets)
    if ref_hidden is None:
        return policy, None, None
    with torch.no_grad():
        ref_hidden, ref_weight = ref_hidden.detach(), ref_weight.detach()
        reference = -kernel(ref_hidden, ref_weight, targets)
        if lam == 0:
            future = policy.detach().clone()
        else:
            hidden_cat, weight_cat = future_product_inputs(hidden.detach(), weight.detach(), ref_hidden, ref_weight,
                                                           float(lam))
            future = -kernel(hidden_cat, weight_cat, targets)
            del hidden_cat, weight_cat
    return policy, reference, future


# ----------------------------------------------------------------------------- adapters

def chunked_kernel(chunk_size: int = 1024) -> Kernel:
    """The project's chunked log-softmax as a kernel (no reference): pure torch, any device and dtype."""

    def kernel(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
        return -chunked_token_logprobs(hidden, weight, targets, chunk_size=chunk_size)[0]

    return kernel


def _require(module: str, package: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{package} is not installed ({what}): `pip install {package}`, or offline "
                          f"`pip install --no-index --no-deps <folder>/*.whl` ({type(err).__name__}: {err})") from None


def _package_version(dist: str) -> tuple[int, ...] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version(dist)
    except PackageNotFoundError:  # imported from a source tree: trust it
        return None
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def liger_fused_kernel(accum_dtype: torch.dtype | None = torch.float32) -> Kernel:
    """Liger-Kernel's fused linear cross-entropy, per token.

    Calls ``liger_kernel.transformers.functional.liger_fused_linear_cross_entropy(input, weight,
    target, ..., reduction="none", accum_dtype=...)`` (a thin wrapper over
    ``liger_kernel.ops.fused_linear_cross_entropy.LigerFusedLinearCrossEntropyFunction.apply``).
    Caveats, from its source (v0.8.2):

    - ``reduction="none"`` with gradients is correct only from **0.8.2** (PR #1298): before, the
      per-token upstream gradient was read as a scalar (``grad_output[0]`` scaled every row) and
      grad_weight came out silently wrong. Older versions are refused here. In 0.8.2 that mode
      defers the gradient to backward and recomputes the logits there; mean/sum still compute
      gradients in the forward.
    - ``input`` and ``weight`` must share a dtype (``torch.mm`` per chunk); logits are upcast to fp32
      inside the Triton kernel; the returned loss is fp32. ``accum_dtype=None`` would accumulate
      grad_weight in the weight's dtype (bf16), hence fp32 by default here.
    - No shift: row i of ``input`` is scored against ``target[i]`` (rows already aligned here).
      Targets equal to ``ignore_index`` (-100) get loss 0.
    """
    functional = _require("liger_kernel.transformers.functional", "liger-kernel", "the liger variant")
    found = _package_version("liger-kernel")
    if found is not None and found < LIGER_MIN_VERSION:
        raise ImportError(f"liger-kernel {'.'.join(map(str, found))} is too old: per-token (reduction='none') "
                          f"gradients are wrong before 0.8.2; install liger-kernel>=0.8.2")
    fused = functional.liger_fused_linear_cross_entropy
    extra = {} if accum_dtype is None else {"accum_dtype": accum_dtype}

    def kernel(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
        return fused(hidden, weight, targets, reduction="none", **extra)

    return kernel


def cce_kernel(filter_eps: float | str | None = "auto") -> Kernel:
    """Apple's Cut Cross-Entropy, per token: ``cut_cross_entropy.linear_cross_entropy(e, c, targets,
    reduction="none", filter_eps=...)``.

    Caveats, from its source (25.1.1 on PyPI through 25.6.4 on GitHub; these two keywords exist in all):

    - ``filter_eps="auto"`` (the library's default) **skips gradient entries whose softmax is below
      eps(dtype)/32** (bf16: 2.4e-4): a faster, approximate gradient. ``filter_eps=None`` gives the
      exact gradient (what the ``cce_exact`` preset does, together with fp32 accumulation).
    - ``reduction="none"`` is supported with gradients (the per-token upstream gradient goes into
      the backward kernel); the loss is fp32.
    - ``shift=0`` (default): e[i] predicts targets[i], as here. Needs an Ampere-or-newer CUDA GPU
      (it checks ``torch.cuda.is_bf16_supported()``); ``e`` and ``c`` should share a dtype.
    """
    lce = _require("cut_cross_entropy", "cut-cross-entropy", "the cce variant").linear_cross_entropy

    def kernel(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
        return lce(hidden, weight, targets, reduction="none", filter_eps=filter_eps)

    return kernel
