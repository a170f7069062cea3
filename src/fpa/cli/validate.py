"""Check configs without loading a model or touching the network.

    python -m fpa.cli.validate                                  # every preset and experiment
    python -m fpa.cli.validate model=qwen2.5-math-7b trainer=fsdp objective=kto fpa.lam=2   # one config
    python -m fpa.cli.validate --config generate model=llama-3.2-3b-instruct

Prints one line per problem; exits 1 if any config has one.
"""

from __future__ import annotations

import argparse
import sys

from fpa.guards import ConfigError
from fpa.validation import compose, validate_config, validate_presets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpa.cli.validate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="train", help="config name: train | generate | eval")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; none: check every preset")
    args = parser.parse_args(argv)
    if args.overrides:
        try:
            problems = validate_config(compose(args.config, args.overrides),
                                       "all" if args.config in ("train", "generate") else "model")
        except ConfigError as e:
            problems = e.problems
        for p in problems:
            print(f"error: {p}")
        if not problems:
            print(f"ok: {args.config} {' '.join(args.overrides)}")
        return 1 if problems else 0
    bad = 0
    for name, overrides, problems in validate_presets():
        label = f"{name} {' '.join(overrides)}".strip()
        print(f"{'ok  ' if not problems else 'FAIL'} {label}")
        for p in problems:
            print(f"       {p}")
        bad += bool(problems)
    print(f"{bad} of the checked configs have problems" if bad else "every preset and experiment config is valid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
