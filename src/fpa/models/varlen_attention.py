"""Padding-free attention on CPU (and on GPU without flash-attention): causal SDPA within each packed sequence.

A packed batch (:mod:`fpa.data.packing`) is one row of all its sequences, positions restarting at 0
for each. With ``attn_implementation`` ``sdpa`` or ``eager``, transformers turns restarting positions
into one block-diagonal ``[N, N]`` mask, so attention costs ``N²`` for the whole batch instead of
``Σ Lᵢ²``: on the embedded default's batches (64 rows of ~36 tokens) that is 40× the attention work
of the padded rows, and more than the padding saved. Here the packed row's queries, keys and values
are gathered into ``[sequences, heads, longest, head_dim]`` (each sequence left-aligned, the rest of
its row filled with copies that no valid query can see under the causal mask) and attended in one
``scaled_dot_product_attention(is_causal=True)`` call; the valid positions are gathered back. So
only attention sees padding (``S × L²``, as the padded rows would), while every linear layer runs on
the packed tokens alone. transformers builds no mask for an attention function it has no mask
function for.

Models whose attention is flash-attention keep it (it is varlen already).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

NAME = "fpa_varlen"
NATIVE_VARLEN = ("flash_attention_2", "flash_attention_3")  # already padding-free on packed rows


def segments(positions: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each sequence of a packed row, from its position ids (a sequence starts at position 0)."""
    starts = [i for i, p in enumerate(positions) if p == 0 or i == 0]
    return list(zip(starts, starts[1:] + [len(positions)]))


def _layout(positions: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(gather index [S, L], valid [S, L]) of a packed row: sequence s's token t sits at index[s, t]."""
    spans = segments(positions)
    longest = max(e - s for s, e in spans)
    steps = torch.arange(longest)
    starts = torch.tensor([s for s, _ in spans])[:, None]
    lengths = torch.tensor([e - s for s, e in spans])[:, None]
    valid = steps[None] < lengths
    index = torch.where(valid, starts + steps[None], starts)  # filler: the sequence's first token (never attended)
    return index.to(device), valid.to(device)


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     position_ids: torch.Tensor | None = None, **_):
    """transformers' attention interface: [B, H, T, D] query/key/value → ([B, T, H, D], None)."""
    if position_ids is None:
        raise ValueError(f"attention {NAME!r} needs position_ids (it attends within each packed sequence)")
    if attention_mask is not None:
        raise ValueError(f"attention {NAME!r} takes packed rows without an attention mask")
    gqa = key.shape[1] != query.shape[1]
    rows = []
    for b in range(query.shape[0]):
        index, valid = _layout(position_ids[b if position_ids.shape[0] > 1 else 0].tolist(), query.device)

        def per_sequence(x: torch.Tensor) -> torch.Tensor:  # [H, T, D] → [S, H, L, D]
            return x[b][:, index].transpose(0, 1)

        out = F.scaled_dot_product_attention(per_sequence(query), per_sequence(key), per_sequence(value),
                                             dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
        rows.append(out.transpose(1, 2)[valid])  # [S, L, H, D] → the valid positions in packed order: [T, H, D]
    return torch.stack(rows), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)


@contextlib.contextmanager
def packed_attention(model) -> Iterator[None]:
    """Within this block ``model`` attends per packed sequence (unless its attention is natively varlen)."""
    config = model.config
    current = getattr(config, "_attn_implementation", None)
    if current in NATIVE_VARLEN or current == NAME:
        yield
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = current
