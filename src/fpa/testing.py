"""Tiny, fast inputs for tests and smoke checks: a randomly initialised model and a trajectory file.

Nothing is downloaded; everything is built from a transformers config in a few hundred ms.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fpa.models.char_tokenizer import build_char_tokenizer


def build_model(out: Path, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
                intermediate_size: int = 64, max_positions: int = 64, dropout: float = 0.0, seed: int = 0,
                tie: bool = True) -> Path:
    """A tiny Llama + the character tokenizer, saved like a hub model (``dropout``: attention dropout)."""
    out = Path(out)
    tok = build_char_tokenizer()
    config = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=tie, attention_dropout=dropout,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


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
