"""Padding-free packing: a batch's rows concatenated into one row, positions restarting per sequence.

The model sees ``packed_input_ids`` [1, N] with ``packed_position_ids`` counting 0, 1, ... within
each sequence. transformers (Llama, Qwen2, ...) turns restarting position ids into a block-diagonal
causal mask, for sdpa and eager attention as well as flash-attention, but ONLY when the model is
called with ``attention_mask=None`` and without a KV cache (``use_cache=False``). Given a 2D
all-ones mask, or with a cache, every packed sequence attends to the ones before it. So a packed
batch must be run as ``model(input_ids, position_ids=..., attention_mask=None, use_cache=False)``.

The objective still sees the padded layout: the packed row scores exactly the tokens the padded
rows score, in the same (row-major) order, so :func:`unpack` is one ``masked_scatter``. The first
token of every packed sequence is never scored (it has no predecessor in its own sequence), as in
the padded layout.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor


def pack_rows(rows) -> dict[str, Tensor]:
    """``rows``: (prompt ids, completion ids, ...) tuples → packed [1, N] tensors, keys ``packed_*``."""
    ids, pos, comp = [], [], []
    for p, c, *_ in rows:
        seq = list(p) + list(c)
        ids += seq
        pos += range(len(seq))
        comp += [False] * len(p) + [True] * len(c)
        comp[len(comp) - len(seq)] = False  # a sequence's first token has no predecessor to score it
    n = len(ids)
    return {"packed_input_ids": torch.tensor([ids], dtype=torch.long),
            "packed_position_ids": torch.tensor([pos], dtype=torch.long),
            "packed_attention_mask": torch.ones((1, n), dtype=torch.long),
            "packed_completion_mask": torch.tensor([comp], dtype=torch.bool)}


def scored_mask(batch: dict[str, Tensor], prefix: str = "") -> Tensor:
    """[rows, T-1]: which next-token positions are scored (as in fpa.logprobs.completion_logprobs)."""
    return batch[f"{prefix}completion_mask"][:, 1:].bool() & batch[f"{prefix}attention_mask"][:, 1:].bool()


def unpack(values: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Per-position values of the packed row [1, N-1] → the padded layout [B, T-1] (zero where unscored)."""
    padded, packed = scored_mask(batch), scored_mask(batch, "packed_")
    return values.new_zeros(padded.shape).masked_scatter(padded, values[packed])


def unpack_logprobs(lp, batch: dict[str, Tensor]):
    """A ``CompletionLogProbs`` of the packed row → the same in the padded layout the objectives expect."""
    def back(v):
        return None if v is None else unpack(v, batch)

    return replace(lp, policy=back(lp.policy), mask=scored_mask(batch), reference=back(lp.reference),
                   future=back(lp.future))
