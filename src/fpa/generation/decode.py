"""A lean sampling loop over a causal LM with a KV cache, for :class:`fpa.generation.hf.HFGenerator`.

It samples what transformers ``generate`` samples for the same left-padded batch and the same global
RNG state (temperature, then top-p, then ``torch.multinomial``; argmax at temperature 0), with three
differences in the work done, not in the result:

- identical rows (the ``n`` samples of one prompt) share one prefill: the prompt runs through the
  model once and its KV cache rows are copied;
- rows that produced EOS leave the batch (their KV cache rows, mask and position are dropped) once
  they are ``COMPACT`` (a quarter) of it, so later steps run the model on the unfinished rows only
  (``generate`` keeps computing finished rows, padding them, until every row is done); waiting for
  a quarter bounds the cache copies a compaction costs;
- none of ``generate``'s per-step machinery (input preparation, stopping criteria objects, the
  processor list of the model's generation config).

Random numbers. ``torch.multinomial(probs, 1)`` on a ``[B, V]`` tensor draws ``q ~ Exp(1)`` of shape
``[B, V]`` and returns ``argmax(probs / q)``. The loop draws the same ``[B, V]`` noise at every step,
for the whole original batch, and uses the rows that are still decoding, so the RNG stream and
every row's sample are those of ``generate``: a row's tokens do not depend on when other rows
finished. (The logits of a row can differ from ``generate``'s in the last float bits when the model
runs on a different set of rows, which changes a sample only at an exact near-tie.)

Used only for plain decoder-only sampling: :func:`supported` says whether the model's generation
config asks for anything beyond temperature/top-p (a repetition penalty, suppressed tokens, ...);
where it does, the caller uses ``generate``.
"""

from __future__ import annotations

import inspect

import torch

# GenerationConfig fields that make ``generate`` add a logits processor or stopping rule of its own;
# a model whose generation config sets any of them away from the default is sampled with ``generate``.
_EXTRA_FIELDS = ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
                 "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                 "forced_bos_token_id", "forced_eos_token_id", "exponential_decay_length_penalty",
                 "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "guidance_scale",
                 "watermarking_config", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p", "top_h",
                 "renormalize_logits", "remove_invalid_values", "stop_strings", "max_time")


def supported(model) -> bool:
    """True where :func:`decode` samples exactly what ``generate`` would (plain decoder-only sampling)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False) or not hasattr(model, "generation_config"):
        return False
    from transformers import GenerationConfig

    default, own = GenerationConfig(), model.generation_config
    return all(getattr(own, f, None) == getattr(default, f, None) for f in _EXTRA_FIELDS)


def _forward_kwargs(model) -> tuple[str, bool]:
    """(name of the cache argument, whether ``logits_to_keep`` is taken) of the model's own forward; a LoRA
    (peft) wrapper forwards ``**kwargs`` to the model it wraps, so its base model's forward decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params  # 5.25 renamed it


def _scores(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """``generate``'s warpers, in its order: temperature, then top-p (keeping at least one token)."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        drop = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    return logits


COMPACT = 0.25  # finished rows leave the batch once they are this share of it (each compaction copies the cache)


def multinomial_draw(probs: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """One token per row of ``probs`` (the rows ``rows`` of a batch of ``batch``), as ``torch.multinomial(p, 1)``
    on the whole batch would draw them: ``argmax(p / q)``, ``q ~ Exp(1)`` of shape ``[batch, V]``."""
    noise = torch.empty((batch, probs.shape[-1]), dtype=probs.dtype, device=probs.device).exponential_(1)
    return (probs / noise[rows]).argmax(dim=-1)


draw = multinomial_draw  # the sampler decode uses (benchmarks/generation_throughput.py times another)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, as ``generate`` makes them (pads get 1; they are masked anyway)."""
    positions = mask.cumsum(-1) - 1
    return positions.masked_fill_(mask == 0, 1)


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, eos_id: int,
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """``[B, max_new_tokens]`` new token ids (``pad_id`` after a row's EOS) for a left-padded batch.

    Samples from the global torch RNG (seed it before the call) when ``temperature > 0``; greedy otherwise.
    """
    from transformers import DynamicCache

    batch, device = input_ids.shape[0], input_ids.device
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    if max_new_tokens <= 0:
        return out
    cache = DynamicCache(config=model.config)
    cache_arg, keep_arg = _forward_kwargs(model)
    mask = attention_mask.long()
    rows = torch.arange(batch, device=device)  # original row of each row still decoding
    # identical prompts (the n samples of a prompt) go through the model once; their cache rows are then copied
    unique, copies = torch.unique(torch.cat([input_ids, mask], dim=1), dim=0, return_inverse=True)
    width = input_ids.shape[1]
    first_ids, first_mask = (unique[:, :width], unique[:, width:]) if len(unique) < batch else (input_ids, mask)
    logits = model(input_ids=first_ids, attention_mask=first_mask, position_ids=_positions(first_mask),
                   use_cache=True, **{cache_arg: cache}, **({"logits_to_keep": 1} if keep_arg else {})).logits[:, -1]
    if len(unique) < batch:
        cache.batch_select_indices(copies)
        logits = logits[copies]
    position = _positions(mask)[:, -1:] + 1
    going = torch.ones(batch, dtype=torch.bool, device=device)  # per row in the batch: not finished yet
    sample = temperature > 0
    for step in range(max_new_tokens):
        if sample:
            scores = _scores(logits.float(), temperature, top_p)
            tokens = draw(scores.softmax(dim=-1), rows, batch)
        else:
            tokens = logits.float().argmax(dim=-1)
        tokens = torch.where(going, tokens, pad_id)  # rows already done (kept until the next compaction)
        out[rows[going], step] = tokens[going]
        if step == max_new_tokens - 1:
            break
        going = going & (tokens != eos_id)
        if not bool(going.all()):
            n_going = int(going.sum())
            if n_going == 0:
                break
            if going.numel() - n_going >= max(1, int(COMPACT * going.numel())):
                keep = going.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                rows, tokens, mask, position, going = rows[keep], tokens[keep], mask[keep], position[keep], going[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                       **{cache_arg: cache}).logits[:, -1]
        position = position + 1
    return out
