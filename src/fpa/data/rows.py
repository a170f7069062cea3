"""Model rows of each example kind: (prompt ids, completion ids, chosen, reward, group) tuples.

The objective's ``data`` kind picks the builder. Pairs put all chosen rows first, then all rejected
rows, so pair i is rows i and i + B/2 (the layout ``ObjectiveInputs`` expects). Every builder gives
the rows of a batch's example ``i`` the group id ``i``, in a fixed order (``fpa.data.reference``
relies on it to serve each example's precomputed reference log-probs).
"""

from __future__ import annotations

Row = tuple[list[int], list[int], bool, float, int]  # prompt, completion, chosen, reward, group


def _pair_rows(examples) -> list[Row]:
    chosen = [(e["prompt_ids"], e["chosen_ids"], True, 1.0, i) for i, e in enumerate(examples)]
    rejected = [(e["prompt_ids"], e["rejected_ids"], False, 0.0, i) for i, e in enumerate(examples)]
    return chosen + rejected


def _unpaired_rows(examples) -> list[Row]:
    return [(e["prompt_ids"], e["completion_ids"], bool(e["label"]), float(e["label"]), i)
            for i, e in enumerate(examples)]


def _group_rows(examples) -> list[Row]:
    return [(e["prompt_ids"], c, r > 0.5, r, i)
            for i, e in enumerate(examples) for c, r in zip(e["completions_ids"], e["rewards"])]


def _correct_rows(examples) -> list[Row]:
    return [(e["prompt_ids"], e["completion_ids"], True, 1.0, i) for i, e in enumerate(examples)]


ROW_BUILDERS = {"pairs": _pair_rows, "unpaired": _unpaired_rows, "groups": _group_rows, "correct": _correct_rows}

# Each kind's completion fields in row order (``groups``: one field holding a list of completions).
ROW_FIELDS = {"pairs": ("chosen", "rejected"), "unpaired": ("completion",), "groups": ("completions",),
              "correct": ("completion",)}


def row_values(example, kind: str, suffix: str) -> list[float] | None:
    """The per-token values stored beside an example's completions (``<field>_<suffix>``), concatenated in
    the order of its rows; None if any completion has none."""
    out: list[float] = []
    for name in ROW_FIELDS[kind]:
        values = example.get(f"{name}_{suffix}")
        if values is None:
            return None
        for v in (values if name == "completions" else [values]):
            out.extend(v)
    return out
