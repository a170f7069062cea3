"""The kernel path (fpa.fused_lm_head) against the full-logits computation, in float64, on CPU.

The Liger and Cut Cross-Entropy adapters need CUDA; here they are checked for their error when the
package is missing and, with a stand-in module, for the call they make.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

import fpa.fused_lm_head as FL
from fpa.fused_lm_head import chunked_kernel, future_product_inputs, kernel_token_logprobs
from fpa.logprobs import chunked_token_logprobs, naive_completion_outputs

N, H, V = 37, 8, 61


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hid = torch.randn(N, H, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    rh = torch.randn(N, H, generator=g, dtype=torch.float64)
    rw = torch.randn(V, H, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (N,), generator=g)
    go = torch.randn(N, generator=g, dtype=torch.float64)
    return hid, w, rh, rw, y, go


def compare(kernel, lam: float) -> None:
    hid, w, rh, rw, y, go = inputs()
    pol, ref, fut = kernel_token_logprobs(kernel, hid, w, y, rh, rw, lam=lam)
    npol, nref, nfut = naive_completion_outputs(hid, w, y, rh, rw, lam)
    for got, want in ((pol, npol), (ref, nref), (fut, nfut)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert pol.requires_grad and not ref.requires_grad and not fut.requires_grad
    grads = torch.autograd.grad((pol * go).sum(), (hid, w))
    naive_grads = torch.autograd.grad((npol * go).sum(), (hid, w))
    for got, want in zip(grads, naive_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_kernel_path_equals_naive(lam, chunk):
    compare(chunked_kernel(chunk), lam)


@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_concatenated_product_is_the_future_logits(lam):
    hid, w, rh, rw, _, _ = inputs(1)
    hc, wc = future_product_inputs(hid, w, rh, rw, lam)
    assert hc.shape == (N, 2 * H) and wc.shape == (V, 2 * H)
    torch.testing.assert_close(hc @ wc.T, (1 + lam) * (hid @ w.T) - lam * (rh @ rw.T), rtol=0, atol=1e-12)


def test_a_kernel_that_drops_the_reference_half_is_caught():
    # The comparison above can fail: a kernel scoring only the first H columns (the policy's half of
    # the concatenated product) gives the right policy and reference but the wrong future.
    exact = chunked_kernel(16)

    def half(hidden, weight, targets):
        return exact(hidden[:, :H], weight[:, :H], targets)

    with pytest.raises(AssertionError):
        compare(half, 0.5)


def test_future_differs_from_policy_and_reference():
    hid, w, rh, rw, y, _ = inputs(2)
    pol, ref, fut = kernel_token_logprobs(chunked_kernel(), hid, w, y, rh, rw, lam=1.0)
    assert (fut - pol).abs().max() > 1e-3 and (fut - ref).abs().max() > 1e-3


def test_without_reference_and_mismatched_arguments():
    hid, w, rh, _, y, _ = inputs(3)
    pol, ref, fut = kernel_token_logprobs(chunked_kernel(), hid, w, y)
    assert ref is None and fut is None and pol.shape == (N,)
    with pytest.raises(ValueError, match="go together"):
        kernel_token_logprobs(chunked_kernel(), hid, w, y, ref_hidden=rh)


def test_bf16_reference_next_to_fp32_policy():
    # The reference is scored in its own dtype, as the chunked path does; the future's product runs
    # in the policy's dtype (the reference's halves upcast), so it matches full fp32 logits.
    hid, w, rh, rw, y, _ = inputs(4)
    hid32, w32, rh16, rw16 = hid.detach().float(), w.detach().float(), rh.bfloat16(), rw.bfloat16()
    _, ref, fut = kernel_token_logprobs(chunked_kernel(), hid32, w32, y, rh16, rw16, lam=1.0)
    _, cref, _ = chunked_token_logprobs(hid32, w32, y, rh16, rw16, lam=1.0)
    _, _, nfut = naive_completion_outputs(hid32, w32, y, rh16.float(), rw16.float(), 1.0)
    assert ref.dtype == fut.dtype == torch.float32
    torch.testing.assert_close(ref, cref, rtol=0, atol=1e-5)
    torch.testing.assert_close(fut, nfut, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- adapters

@pytest.mark.parametrize("factory, modules, package", [
    (FL.liger_fused_kernel, ["liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.functional"],
     "liger-kernel"),
    (FL.cce_kernel, ["cut_cross_entropy"], "cut-cross-entropy"),
])
def test_adapter_without_its_package_says_so(monkeypatch, factory, modules, package):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    with pytest.raises(ImportError) as info:
        factory()
    message = str(info.value)
    assert message.startswith(f"{package} is not installed") and "\n" not in message
    assert "--no-index" in message


def _naive_nll(hidden, weight, targets):
    return F.cross_entropy(hidden @ weight.T, targets, reduction="none")


def _install(monkeypatch, name: str, **attrs) -> dict:
    """A stand-in module ``name`` (parents too) whose functions record their keyword arguments."""
    calls: dict = {}
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for attr, fn in attrs.items():
        def recorder(*args, _fn=fn, **kwargs):
            calls.update(kwargs, nargs=len(args))
            return _fn(*args[:3])
        setattr(sys.modules[name], attr, recorder)
    return calls


def test_liger_adapter_call(monkeypatch):
    calls = _install(monkeypatch, "liger_kernel.transformers.functional", liger_fused_linear_cross_entropy=_naive_nll)
    monkeypatch.setattr(FL, "_package_version", lambda dist: (0, 8, 5))
    compare(FL.liger_fused_kernel(), 0.5)
    assert calls == {"reduction": "none", "accum_dtype": torch.float32, "nargs": 3}


def test_liger_adapter_refuses_versions_with_wrong_per_token_gradients(monkeypatch):
    _install(monkeypatch, "liger_kernel.transformers.functional", liger_fused_linear_cross_entropy=_naive_nll)
    monkeypatch.setattr(FL, "_package_version", lambda dist: (0, 8, 1))
    with pytest.raises(ImportError, match=r"liger-kernel 0\.8\.1 is too old"):
        FL.liger_fused_kernel()


def test_cce_adapter_call(monkeypatch):
    calls = _install(monkeypatch, "cut_cross_entropy", linear_cross_entropy=_naive_nll)
    compare(FL.cce_kernel(filter_eps=None), 3.0)
    assert calls == {"reduction": "none", "filter_eps": None, "nargs": 3}
