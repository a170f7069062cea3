"""Reference log-probs computed once and served with the data (``train.precompute_reference``).

An objective that reads the reference only through the per-token log-probs of the rows the
DataModule serves (``Objective.reference_on_served_rows``: DPO, IPO, RPO, offline PG, GRPO) does not need
the reference model at training time when FPA is off: :mod:`fpa.stages.reference_logprobs` scores
every training example's rows once, and each example carries them under :data:`KEY`, a 1-D tensor
holding its rows' scored tokens in row order (the order of :data:`fpa.data.rows.ROW_BUILDERS`).
The collator puts them into the batch in the padded layout the objectives read, for padded and
packed batches alike.

Which rows belong to which example needs no schema of its own: every row builder gives the rows of
the batch's example ``i`` the group id ``i`` (``Row[4]``), in a fixed order, so an example's rows are
the batch's rows with its group id, in the order they appear.

FPA needs the reference's full logits at every step (the future policy mixes the policy's and the
reference's logits over the whole vocabulary), and KTO scores the reference on mismatched rows built
per batch: neither can be computed in advance (:func:`blocker`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

KEY = "reference_logprobs"  # the example field and the batch key
SETTINGS = ("auto", True, False)


def blocker(objective, fpa) -> str | None:
    """Why the reference cannot be precomputed for ``objective`` under ``fpa``; None when it can."""
    name = type(objective).__name__
    if fpa is not None and fpa.enabled:
        return (f"FPA (fpa.lam={fpa.lam}) needs the reference's full logits at every step for the future "
                "policy, not only the stored tokens' log-probs")
    # FPA's own reference needs at λ = 0 (the future guard) read the served rows' token log-probs only.
    fpa_reads = fpa is not None and getattr(fpa, "needs_reference", False)
    if not objective.needs_reference and not fpa_reads:
        return f"objective {name} does not read a reference: there is nothing to precompute"
    if objective.needs_kl_rows:
        return (f"objective {name} reads the reference on mismatched KL rows built per batch, which cannot be "
                "computed in advance")
    if not getattr(objective, "reference_on_served_rows", False):
        return (f"objective {name} does not declare reference_on_served_rows (it may read the reference beyond "
                "the served rows' token log-probs)")
    return None


def check_setting(value: Any) -> None:
    """``train.precompute_reference``: auto | true | false (``ValueError("precompute_reference: ...")``)."""
    if not (value == "auto" or isinstance(value, bool)):
        raise ValueError(f"precompute_reference: must be auto, true or false, got {value!r}")


def enabled(setting: Any, objective, fpa) -> bool:
    """Resolve ``train.precompute_reference``: ``auto`` is on wherever :func:`blocker` finds nothing."""
    if setting == "auto":
        return blocker(objective, fpa) is None
    return bool(setting)


def rows_of(example: dict[str, Any], kind: str) -> list:
    """The rows (``fpa.data.collate.Row``) one example gives, in the collator's order."""
    from fpa.data.rows import ROW_BUILDERS

    return ROW_BUILDERS[kind]([example])


def rows_digest(examples: list[dict[str, Any]], kind: str) -> str:
    """A hash of every row's token ids (prompt, completion), example by example: what the log-probs depend on.

    It covers whatever changed the rows: trajectories, pairing and its seed, tokenizer, max_length, overlong.
    """
    h = hashlib.sha256(kind.encode())
    for ex in examples:
        rows = [(list(map(int, p)), list(map(int, c))) for p, c, *_ in rows_of(ex, kind)]
        h.update(repr(rows).encode() + b"\n")
    return h.hexdigest()


def per_example(rows: list, row_values: list[Tensor], n_examples: int) -> list[Tensor]:
    """Per-row values of a batch → per-example tensors (an example's rows concatenated in row order)."""
    pieces: list[list[Tensor]] = [[] for _ in range(n_examples)]
    for row, values in zip(rows, row_values, strict=True):
        pieces[int(row[4])].append(values)
    return [torch.cat(p) if p else torch.empty(0) for p in pieces]


def batch_values(examples: list[dict[str, Any]], rows: list, scored: Tensor, key: str = KEY) -> Tensor:
    """The examples' stored per-token values (``example[key]``: the reference's log-probs, or a rollout's
    behaviour log-probs) placed at the batch's scored positions ``scored`` [rows, T-1] (0 elsewhere)."""
    counts = scored.sum(1).tolist()
    taken = [0] * len(examples)
    pieces = []
    for row, n in zip(rows, counts, strict=True):
        g = int(row[4])
        stored = examples[g][key]
        pieces.append(stored[taken[g]:taken[g] + n])
        taken[g] += n
    for g, ex in enumerate(examples):
        if taken[g] != ex[key].numel():
            raise ValueError(f"{key}: an example has {ex[key].numel()} stored values but its rows score "
                             f"{taken[g]} tokens; what is stored does not belong to these examples")
    values = torch.cat(pieces)
    return values.new_zeros(scored.shape).masked_scatter(scored, values)


def attach(examples: list[dict[str, Any]], values: Tensor, offsets: Tensor) -> None:
    """Give example k the view ``values[offsets[k]:offsets[k+1]]`` under :data:`KEY`."""
    if offsets.numel() != len(examples) + 1 or int(offsets[-1]) != values.numel():
        raise ValueError(f"{KEY}: {offsets.numel() - 1} examples and {values.numel()} values stored, but "
                         f"{len(examples)} examples to serve; the cache entry does not belong to these examples")
    bounds = offsets.tolist()
    for k, ex in enumerate(examples):
        ex[KEY] = values[bounds[k]:bounds[k + 1]]
