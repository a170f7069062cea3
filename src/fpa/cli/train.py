"""fpa-train: base model → SFT warm start (reference) → trajectories → objective (+FPA) → held-out eval.

    fpa-train                          # FPA-DPO on the embedded default
    fpa-train fpa.lam=0                # DPO, reusing the cached reference and trajectories
    fpa-train experiment=smoke         # every stage at toy size
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from fpa.cli.app import hydra_app
from fpa.evaluation.callback import make_eval_callbacks
from fpa.models.loading import load_tokenizer
from fpa.reporting.labels import method_label, objective_name
from fpa.stages.evaluate import evaluate_model
from fpa.stages.prepare import base_model
from fpa.stages.runtime import make_prompt
from fpa.stages.sample import generate_trajectories
from fpa.stages.train import is_global_zero, train_policy
from fpa.validation import check_config
from fpa.guards import FPAError
from fpa.stages.warm_start import warm_start


def run(cfg: DictConfig, run_dir: Path) -> dict:
    check_config(cfg)  # one clear line per problem, before any model loads
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - start, 1)
        return result

    base, base_ident = timed("prepare", base_model, cfg)
    reference, ref_ident = timed("sft", warm_start, cfg, base, base_ident)
    trajectories, _ = timed("generate", generate_trajectories, cfg, reference, ref_ident)
    loggers = [instantiate(lg, save_dir=str(run_dir)) for lg in cfg.logger.values()]
    callbacks = make_eval_callbacks(cfg, load_tokenizer(reference), make_prompt(cfg), samples_dir=run_dir / "eval_samples")
    policy = timed("train", train_policy, cfg, reference, trajectories, run_dir, loggers, callbacks)
    if not is_global_zero():
        return {}  # other ranks of a multi-process run: rank 0 evaluates and writes the results
    ref_eval = timed("eval_reference", evaluate_model, cfg, reference, ident=ref_ident)
    pol_eval = timed("eval_policy", evaluate_model, cfg, str(policy), out=run_dir / "eval")
    for lg in loggers:
        lg.log_metrics({"eval/reference/pass@1": ref_eval["pass@1"], "eval/policy/pass@1": pol_eval["pass@1"]})
        lg.finalize("success")
    choice = HydraConfig.get().runtime.choices.get("objective") if HydraConfig.initialized() else None
    results = {"objective": objective_name(cfg.objective._target_, choice), "fpa": dict(cfg.fpa),
               "reference": ref_eval, "policy": pol_eval, "stage_seconds": timings,
               "paths": {"reference": reference, "trajectories": str(trajectories), "policy": str(policy)}}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    return results


def print_table(results: dict) -> None:
    name = method_label(results["objective"], results["fpa"]["lam"], results["fpa"]["apply_to"])
    rows = [("reference", results["reference"]), (name, results["policy"])]
    print(f"\n| model | {results['reference']['benchmark']} pass@1 | outcome | process |\n|---|---|---|---|")
    for label, r in rows:
        proc = "-" if r["process"] is None else f"{r['process']:.3f}"
        print(f"| {label} | {r['pass@1']:.3f} | {r['outcome']:.3f} | {proc} |")
    print("stage seconds:", results["stage_seconds"])


def write_status(run_dir: Path, status: str, **extra) -> None:
    """``status.json``: running / finished / failed, so reports list failed and unfinished runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps({"status": status, **extra}, indent=2, default=str))


@hydra_app("train")
def main(cfg: DictConfig) -> float | None:
    """Returns the policy's held-out pass@1: the value Hydra sweepers (Optuna) optimise."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_status(run_dir, "running")
    try:
        results = run(cfg, run_dir)
    except BaseException as err:
        write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        if isinstance(err, FPAError):
            raise SystemExit(f"fpa-train: {err}") from None
        raise
    write_status(run_dir, "finished")
    return results["policy"]["pass@1"] if results else None


if __name__ == "__main__":
    main()
