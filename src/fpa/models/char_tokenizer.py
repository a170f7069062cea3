"""A character-level tokenizer built locally with `tokenizers`, saved and loaded like any hub tokenizer."""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def build_char_tokenizer(chars: str | None = None) -> PreTrainedTokenizerFast:
    """One token per character (printable ASCII by default), plus pad/bos/eos/unk."""
    chars = chars if chars is not None else "".join(c for c in string.printable if c not in "\t\r\x0b\x0c")
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(chars)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")
