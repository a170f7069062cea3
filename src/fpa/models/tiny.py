"""The embedded default model: a ~1M-parameter decoder built from a transformers config.

It is written to disk with ``save_pretrained`` and every stage loads it back with
``from_pretrained``, exactly as a hub model would be loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fpa.models.char_tokenizer import build_char_tokenizer


def build_tiny_model(out_dir: str | Path, family: str = "llama", hidden_size: int = 128, num_layers: int = 4,
                     num_heads: int = 4, intermediate_size: int = 384, max_positions: int = 256,
                     seed: int = 0, tie: bool = True, dropout: float = 0.0, tokenizer=None) -> Path:
    """Build tokenizer + randomly initialised model and save both to ``out_dir`` (``dropout``: attention).

    ``tokenizer``: any fast tokenizer with pad/bos/eos tokens instead of the character one.
    """
    out_dir = Path(out_dir)
    tokenizer = build_char_tokenizer() if tokenizer is None else tokenizer
    config = AutoConfig.for_model(
        family, vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=tie, attention_dropout=dropout,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
