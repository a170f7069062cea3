"""Export a LoRA adapter directory as a merged, plain ``from_pretrained`` model directory.

    python -m fpa.models.export ADAPTER_DIR OUT_DIR [--dtype float32]
"""

from __future__ import annotations

import sys
from pathlib import Path

from fpa.models.loading import load_model, load_tokenizer
from fpa.models.lora import ADAPTER_CONFIG, adapter_base, is_adapter_dir


def export_merged(adapter_dir, out_dir, dtype: str = "float32", trust_remote_code: bool = False) -> Path:
    """Write the merged model of ``adapter_dir`` (and its tokenizer) to ``out_dir`` with ``save_pretrained``."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not is_adapter_dir(adapter_dir):
        raise ValueError(f"{adapter_dir}: not an adapter directory (no {ADAPTER_CONFIG})")
    model = load_model(str(adapter_dir), dtype, trust_remote_code)
    model.save_pretrained(out_dir)
    tok_source = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else adapter_base(adapter_dir)
    load_tokenizer(str(tok_source), trust_remote_code=trust_remote_code).save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fpa.models.export", description=__doc__.splitlines()[0])
    parser.add_argument("adapter_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = export_merged(args.adapter_dir, args.out_dir, args.dtype, args.trust_remote_code)
    except (ValueError, OSError) as e:
        print(f"fpa.models.export: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
