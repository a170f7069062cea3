"""From verified trajectories to training examples: pairs, unpaired labels, reward groups, correct-only.

Each builder takes trajectories (dicts with problem_id, prompt, completion, reward) and returns a
list of examples; which builder runs is the objective's ``data`` kind.

Trajectories that carry their sampled token ids (schema version 2) pass them on: ``prompt_ids`` and
``<field>_ids`` beside each completion text field (``completions_ids`` for groups, None where one
trajectory has none), which :func:`fpa.data.datamodule.tokenize_example` uses verbatim. A trajectory
cut off at the length limit (finish_reason ``length``) adds ``<field>_eos: False`` (``completions_eos``
for groups), so the text path does not append an EOS its sample never emitted. Rollout trajectories
(:mod:`fpa.generation.rollouts`) add ``<field>_behaviour`` (``completions_behaviour``): their behaviour log-probs.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Any, Callable

Example = dict[str, Any]


def by_problem(trajectories: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in trajectories:
        groups[t["problem_id"]].append(t)
    return dict(sorted(groups.items()))


def _prompt(t: dict[str, Any]) -> Example:
    return {"prompt": t["prompt"], **({"prompt_ids": t["prompt_ids"]} if t.get("prompt_ids") is not None else {})}


def _completion(t: dict[str, Any], name: str) -> Example:
    """``name`` -> the completion text, plus its stored ids and the no-EOS flag where the trajectory has them."""
    out: Example = {name: t["completion"]}
    if t.get("completion_ids") is not None:
        out[f"{name}_ids"] = t["completion_ids"]
    if t.get("behaviour_logprobs") is not None:  # rollouts: the sampling policy's log-probs of those ids
        out[f"{name}_behaviour"] = t["behaviour_logprobs"]
    if t.get("finish_reason") == "length":
        out[f"{name}_eos"] = False
    return out


def build_pairs(trajectories, strategy: str = "cap", max_per_problem: int = 4, seed: int = 0,
                threshold: float = 0.5) -> list[Example]:
    """(correct, incorrect) pairs of the same problem.

    strategy: ``all`` every correct × incorrect combination; ``one`` one random pair per problem;
    ``cap`` at most ``max_per_problem`` random pairs per problem, drawn without repeats.
    """
    if strategy not in ("all", "one", "cap"):
        raise ValueError(f"data.pairing must be all | one | cap, got {strategy!r}")
    rng = random.Random(seed)
    out = []
    for pid, rows in by_problem(trajectories).items():
        good = [r for r in rows if r["reward"] > threshold]
        bad = [r for r in rows if r["reward"] <= threshold]
        combos = list(itertools.product(good, bad))
        if strategy == "one":
            combos = rng.sample(combos, min(1, len(combos)))
        elif strategy == "cap":
            combos = rng.sample(combos, min(max_per_problem, len(combos)))
        out += [{"problem_id": pid, **_prompt(g), **_completion(g, "chosen"), **_completion(b, "rejected")}
                for g, b in combos]
    return out


def build_unpaired(trajectories, threshold: float = 0.5, **_) -> list[Example]:
    """Every trajectory with a desirable/undesirable label (KTO)."""
    return [{"problem_id": t["problem_id"], **_prompt(t), **_completion(t, "completion"),
             "label": t["reward"] > threshold} for t in trajectories]


def build_groups(trajectories, only_mixed: bool = False, **_) -> list[Example]:
    """One example per problem holding all its samples and rewards (offline policy gradient)."""
    out = []
    for pid, rows in by_problem(trajectories).items():
        rewards = [float(r["reward"]) for r in rows]
        if only_mixed and len(set(rewards)) < 2:
            continue
        group = {"problem_id": pid, **_prompt(rows[0]), "completions": [r["completion"] for r in rows],
                 "rewards": rewards}
        if any(r.get("completion_ids") is not None for r in rows):
            group["completions_ids"] = [r.get("completion_ids") for r in rows]
        if all(r.get("behaviour_logprobs") is not None for r in rows):
            group["completions_behaviour"] = [r["behaviour_logprobs"] for r in rows]
        if any(r.get("finish_reason") == "length" for r in rows):
            group["completions_eos"] = [r.get("finish_reason") != "length" for r in rows]
        out.append(group)
    return out


def build_correct(trajectories, threshold: float = 0.5, **_) -> list[Example]:
    """Correct trajectories only (SFT / rejection-sampling fine-tuning)."""
    return [{"problem_id": t["problem_id"], **_prompt(t), **_completion(t, "completion")}
            for t in trajectories if t["reward"] > threshold]


BUILDERS: dict[str, Callable[..., list[Example]]] = {
    "pairs": build_pairs, "unpaired": build_unpaired, "groups": build_groups, "correct": build_correct}
