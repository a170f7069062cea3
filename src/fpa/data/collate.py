"""Pad tokenised examples into model rows: prompt + completion (+EOS), with a completion mask.

Each example kind turns into rows (prompt ids, completion ids, chosen, reward, group) by its builder in
:mod:`fpa.data.rows`; the objective's ``data`` kind picks it.
With ``pack=True`` the batch also holds the rows packed into one padding-free row (see
:mod:`fpa.data.packing`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch

from fpa.data.packing import pack_rows, scored_mask
from fpa.data.reference import KEY as REFERENCE, batch_values as reference_values
from fpa.data.rows import ROW_BUILDERS, Row

BEHAVIOUR = "behaviour"  # an example's behaviour log-probs (a tensor, its rows' scored tokens in row order)


def shared_token_flags(a: list[int], b: list[int]) -> tuple[list[bool], list[bool]]:
    """Per-token flags: is this token part of the longest matching blocks the two sequences share?"""
    fa, fb = [False] * len(a), [False] * len(b)
    for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            fa[block.a + k] = fb[block.b + k] = True
    return fa, fb


def pair_shared_flags(example: dict[str, Any]) -> tuple[list[bool], list[bool]]:
    """The pair's shared-token flags: those stored on the example (:func:`add_shared_flags`, once per data set),
    else computed now."""
    if "chosen_shared" in example:
        return example["chosen_shared"], example["rejected_shared"]
    return shared_token_flags(example["chosen_ids"], example["rejected_ids"])


def add_shared_flags(examples: list[dict[str, Any]]) -> None:
    """Store each pair's shared-token flags on it (in place), so batches do not re-align the same pairs."""
    for e in examples:
        e["chosen_shared"], e["rejected_shared"] = shared_token_flags(e["chosen_ids"], e["rejected_ids"])


def pad_rows(rows: list[Row], pad_id: int, extra_masks: list[list[bool]] | None = None) -> dict[str, torch.Tensor]:
    width = max(len(p) + len(c) for p, c, *_ in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    comp = torch.zeros((n, width), dtype=torch.bool)
    extra = torch.zeros((n, width), dtype=torch.bool) if extra_masks is not None else None
    for i, (p, c, *_rest) in enumerate(rows):
        seq = p + c
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        comp[i, len(p): len(seq)] = True
        if extra is not None:
            extra[i, len(p): len(seq)] = torch.tensor(extra_masks[i], dtype=torch.bool)
    out = {"input_ids": ids, "attention_mask": attn, "completion_mask": comp,
           "chosen": torch.tensor([r[2] for r in rows]), "reward": torch.tensor([float(r[3]) for r in rows]),
           "group": torch.tensor([r[4] for r in rows])}
    if extra is not None:
        out["shared_mask"] = extra
    return out


@dataclass
class Collator:
    kind: str
    pad_id: int
    kl_rows: bool = False  # KTO: add mismatched (prompt_i, completion_{i-1}) rows
    shared_tokens: bool = True  # pairs: mark tokens chosen and rejected share (diagnostics)
    pack: bool = False  # add packed_* tensors: all rows in one row, positions restarting per sequence

    def __post_init__(self) -> None:
        if self.kind not in ROW_BUILDERS:
            raise ValueError(f"unknown data kind {self.kind!r}; expected one of {sorted(ROW_BUILDERS)}")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = ROW_BUILDERS[self.kind](examples)
        flags = None
        if self.kind == "pairs" and self.shared_tokens:
            pairs = [pair_shared_flags(e) for e in examples]
            flags = [fa for fa, _ in pairs] + [fb for _, fb in pairs]
        batch = pad_rows(rows, self.pad_id, flags)
        if self.pack:
            batch.update(pack_rows(rows))
        if self.kl_rows:
            if len(rows) < 2:
                raise ValueError("KTO's KL estimate needs at least 2 rows per batch")
            mismatched = [(rows[i][0], rows[i - 1][1], False, 0.0, i) for i in range(len(rows))]
            batch.update({f"kl_{k}": v for k, v in pad_rows(mismatched, self.pad_id).items()
                          if k in ("input_ids", "attention_mask", "completion_mask")})
        if examples and REFERENCE in examples[0]:  # precomputed (fpa.data.reference): padded layout, always
            batch[REFERENCE] = reference_values(examples, rows, scored_mask(batch))
        if examples and BEHAVIOUR in examples[0]:  # rollouts (fpa.generation.rollouts): the sampling policy's log-probs
            batch[BEHAVIOUR] = reference_values(examples, rows, scored_mask(batch), key=BEHAVIOUR)
        return batch
