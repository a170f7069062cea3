"""Tiny, fast inputs for tests and smoke checks: a randomly initialised model and a trajectory file.

Nothing is downloaded; everything is built from a transformers config in a few hundred ms.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L

from fpa.models.tiny import build_tiny_model


def build_model(out: Path, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
                intermediate_size: int = 64, max_positions: int = 64, dropout: float = 0.0, seed: int = 0,
                tie: bool = True) -> Path:
    """A tiny Llama + the character tokenizer, saved like a hub model (``dropout``: attention dropout)."""
    return build_tiny_model(out, "llama", hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                            intermediate_size=intermediate_size, max_positions=max_positions, seed=seed, tie=tie,
                            dropout=dropout)


def write_trajectories(path: Path, n_problems: int = 12, samples: int = 4, seed: int = 0) -> Path:
    """Arithmetic trajectories, half right (reward 1) and half wrong (reward 0) per problem, as JSONL."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_problems):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        for s in range(samples):
            right = s % 2 == 0
            answer = a + b if right else a + b + rng.randint(1, 9)
            rows.append({"problem_id": f"p{i}", "prompt": f"{a}+{b}=", "completion": f"{answer}",
                         "reward": 1.0 if right else 0.0})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Killed(Exception):
    """Raised by :class:`KillSwitch`: training stops as if its process had died."""


class KillSwitch(L.Callback):
    """Raises :class:`Killed` before step ``kill_at`` runs (resume tests); ``steps`` is for what subclasses record."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.steps = kill_at, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.kill_at is not None and trainer.global_step == self.kill_at:
            raise Killed(f"killed before step {trainer.global_step}")
