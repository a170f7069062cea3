"""From verified trajectories to training examples: pairs, unpaired labels, reward groups, correct-only.

Each builder takes trajectories (dicts with problem_id, prompt, completion, reward) and returns a
list of examples; which builder runs is the objective's ``data`` kind.
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
        out += [{"problem_id": pid, "prompt": g["prompt"], "chosen": g["completion"], "rejected": b["completion"]}
                for g, b in combos]
    return out


def build_unpaired(trajectories, threshold: float = 0.5, **_) -> list[Example]:
    """Every trajectory with a desirable/undesirable label (KTO)."""
    return [{"problem_id": t["problem_id"], "prompt": t["prompt"], "completion": t["completion"],
             "label": t["reward"] > threshold} for t in trajectories]


def build_groups(trajectories, only_mixed: bool = False, **_) -> list[Example]:
    """One example per problem holding all its samples and rewards (offline policy gradient)."""
    out = []
    for pid, rows in by_problem(trajectories).items():
        rewards = [float(r["reward"]) for r in rows]
        if only_mixed and len(set(rewards)) < 2:
            continue
        out.append({"problem_id": pid, "prompt": rows[0]["prompt"],
                    "completions": [r["completion"] for r in rows], "rewards": rewards})
    return out


def build_correct(trajectories, threshold: float = 0.5, **_) -> list[Example]:
    """Correct trajectories only (SFT / rejection-sampling fine-tuning)."""
    return [{"problem_id": t["problem_id"], "prompt": t["prompt"], "completion": t["completion"]}
            for t in trajectories if t["reward"] > threshold]


BUILDERS: dict[str, Callable[..., list[Example]]] = {
    "pairs": build_pairs, "unpaired": build_unpaired, "groups": build_groups, "correct": build_correct}
