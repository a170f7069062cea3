"""Check configs without loading a model or touching the network.

    fpa-validate                                                  # every preset and experiment
    fpa-validate model=qwen2.5-math-7b trainer=fsdp objective=kto fpa.lam=2   # one config
    fpa-validate --config generate experiment=llama-3.2-3b-instruct

Builds every typed node of the composed config (each checks its own fields) and runs the
cross-field rules; prints one line per problem and exits 1 if any config has one.
"""

from __future__ import annotations

import argparse
import sys

from fpa.config.compose import ENTRY_CONFIGS, check, check_presets, compose
from fpa.guards import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fpa-validate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="train", choices=ENTRY_CONFIGS, help="config name")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; none: check every preset")
    args = parser.parse_args(argv)
    if args.overrides:
        try:
            problems = check(compose(args.config, args.overrides), args.config)
        except ConfigError as e:
            problems = e.problems
        for p in problems:
            print(f"error: {p}")
        if not problems:
            print(f"ok: {args.config} {' '.join(args.overrides)}")
        return 1 if problems else 0
    bad = 0
    for name, overrides, problems in check_presets():
        label = f"{name} {' '.join(overrides)}".strip()
        print(f"{'ok  ' if not problems else 'FAIL'} {label}")
        for p in problems:
            print(f"       {p}")
        bad += bool(problems)
    print(f"{bad} of the checked configs have problems" if bad else "every preset and experiment config is valid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
