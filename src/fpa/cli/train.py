"""fpa-train: base model → SFT warm start (reference) → trajectories → objective (+FPA) → held-out eval.

    fpa-train                          # FPA-DPO on the embedded default
    fpa-train fpa.lam=0                # DPO, reusing the cached reference and trajectories
    fpa-train experiment=smoke         # every stage at toy size
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fpa.cli.app import expected_errors, hydra_app, one_line
from fpa.config.identity import differences, result_config
from fpa.config.keys import stage_key
from fpa.config.parts import TrainParts, train_parts
from fpa.guards import FPAError
from fpa.run_status import describe_owner, heartbeat, read_status, state, write_status
from fpa.reporting.labels import method_label, objective_name
from fpa.stages.evaluate import evaluate_model
from fpa.stages.prepare import base_model
from fpa.stages.sample import generate_trajectories, trajectory_inputs
from fpa.ranks import is_global_zero
from fpa.stages.train import resume_checkpoint, train_policy
from fpa.stages.warm_start import warm_start


def reference_model(parts: TrainParts, timings: dict | None = None, info: dict | None = None) -> tuple[str, str]:
    """(path, cache key) of the reference: ``model.reference`` as given, else prepare → sft (cached).

    ``info``, if given, receives ``cached`` (whether the warm start came from the cache; absent without one)."""
    timings = {} if timings is None else timings
    if parts.model.reference:
        path = str(parts.model.reference)
        return path, stage_key("reference", "1", path=str(Path(path).resolve()) if Path(path).exists() else path)
    start = time.perf_counter()
    base, base_key = base_model(parts.model, parts.data_seed, parts.cache_dir)
    timings["prepare"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    ref = warm_start(base, base_key, parts.sft, parts.model, parts.task, parts.trainer, parts.data_seed,
                     parts.cache_dir, info=info)
    timings["sft"] = round(time.perf_counter() - start, 1)
    return ref


def run(cfg: DictConfig, run_dir: Path) -> dict:
    parts = train_parts(cfg)  # every node built and checked: one clear line per problem, before any model loads
    choice = HydraConfig.get().runtime.choices.get("objective") if HydraConfig.initialized() else None
    return run_parts(parts, run_dir, choice)


def run_parts(parts: TrainParts, run_dir: Path, objective_choice: str | None = None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_checkpoint(parts, run_dir)  # a bad or mismatched checkpoint fails now, not after the stages before train
    timings: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - start, 1)
        heartbeat(run_dir)
        return result

    cached = {"sft": {}, "generate": {"cached": True}, "eval_reference": {}}  # given trajectories: not built here
    reference, ref_key = reference_model(parts, timings, cached["sft"])
    if parts.data.trajectories:
        trajectories = Path(parts.data.trajectories)
    elif parts.train.rollout_every:  # the live policy samples its own data: no offline set
        trajectories = run_dir / "rollouts"
        cached["generate"] = None
    else:
        inputs = trajectory_inputs(ref_key, parts.task, parts.model.prompt, parts.generate, parts.sft_skip,
                                   parts.data_seed)
        trajectories, _ = timed("generate", generate_trajectories, reference, inputs, parts.cache_dir,
                                parts.model.dtype, info=cached["generate"])
    loggers = parts.make_loggers(run_dir)
    counts: dict = {}
    policy = timed("train", train_policy, parts, reference, trajectories, run_dir, loggers, counts=counts)
    rank0 = is_global_zero()
    end_process_group()  # rank 0 evaluates alone: its metrics must not wait for ranks that are done
    if not rank0:
        return {}  # other ranks of a multi-process run: rank 0 evaluates and writes the results
    ev = {"suite": parts.benchmark, "prompt": parts.model.prompt, "generate": parts.generate,
          "dtype": parts.model.dtype}
    ref_eval = timed("eval_reference", evaluate_model, reference, out=None, key=ref_key, cache_dir=parts.cache_dir,
                     info=cached["eval_reference"], **ev)
    pol_eval = timed("eval_policy", evaluate_model, str(policy), out=run_dir / "eval", **ev)
    for lg in loggers:
        lg.log_metrics({"eval/reference/pass@1": ref_eval["pass@1"], "eval/policy/pass@1": pol_eval["pass@1"]})
        lg.finalize("success")
    fpa = {"lam": float(parts.fpa.lam), "apply_to": parts.fpa.apply_to,
           **({"guard": parts.fpa.guard} if parts.fpa.guard is not None else {})}
    results = {"objective": objective_name(parts.config["objective"]["_target_"], objective_choice), "fpa": fpa,
               "reference": ref_eval, "policy": pol_eval, "stage_seconds": timings,
               "ledger": run_ledger(parts, reference, trajectories, ref_eval, pol_eval, timings, cached, counts),
               "paths": {"reference": reference, "trajectories": str(trajectories), "policy": str(policy)}}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    return results


def run_ledger(parts: TrainParts, reference: str, trajectories: Path, ref_eval: dict, pol_eval: dict,
               timings: dict, cached: dict, counts: dict) -> dict:
    """``results.json["ledger"]`` (:mod:`fpa.ledger`): one entry per stage of ``stage_seconds`` that computes.

    A stage reused from the cache carries ``cached: true`` and its original cost (the seconds and
    tokens its cache entry recorded); the totals include it (README, Compute ledger).
    """
    from fpa import ledger
    from fpa.models.loading import load_tokenizer

    try:
        size = ledger.ModelSize.of_pretrained(reference, parts.model.trust_remote_code)
    except (OSError, ValueError, KeyError, AttributeError):  # no config transformers builds (a GGUF file): FLOPs null
        size = None
    tok = load_tokenizer(reference, trust_remote_code=parts.model.trust_remote_code)
    stages: dict[str, dict] = {}
    if "sft" in timings:
        was_cached = bool(cached["sft"].get("cached"))
        report_file = Path(reference) / "sft_report.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        if "ledger" in report:
            stages["sft"] = {**report["ledger"], "cached": was_cached}
        else:  # a warm start cached before the ledger: its seconds only
            stages["sft"] = ledger.entry(None, seconds=report.get("wall_s", None if was_cached else timings["sft"]),
                                         cached=was_cached)
        if not was_cached:
            stages["sft"]["seconds"] = timings["sft"]
    train_seconds = timings["train"]
    if cached["generate"] is None:  # rollouts during training: sampled, scored and timed round by round
        stages["rollouts"] = ledger.rollout_entry(size, trajectories, tok)
        train_seconds -= stages["rollouts"]["seconds"] or 0.0
    else:
        gen_cached = bool(cached["generate"].get("cached"))
        stages["generate"] = ledger.trajectory_entry(size, trajectories, tok, gen_cached)
        if not gen_cached:
            stages["generate"]["seconds"] = timings["generate"]
    pre = counts.get("reference_logprobs")
    if pre is not None:
        stages["reference_logprobs"] = ledger.entry(size, seconds=pre["seconds"], reference=pre["pass"],
                                                    cached=pre["cached"])
        train_seconds -= pre["seconds"]
    passes = counts.get("passes") or {}
    stages["train"] = ledger.entry(counts.get("size", size), seconds=train_seconds,
                                   policy=passes.get("policy_forward"), reference=passes.get("reference_forward"),
                                   backward=passes.get("backward"))
    for name, ev, was_cached in (("eval_reference", ref_eval, bool(cached["eval_reference"].get("cached"))),
                                 ("eval_policy", pol_eval, False)):
        stages[name] = ledger.evaluation_entry(size, Path(ev["dir"]), tok, was_cached)
        if not was_cached:
            stages[name]["seconds"] = timings[name]
    return ledger.ledger(stages)


def end_process_group() -> None:
    """Close a multi-process run's process group (every rank, after training): what follows is rank 0's alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _score(bench: dict) -> str:
    """pass@1 ± its standard error over problems (evaluations cached before it was recorded have none)."""
    se = bench.get("pass1_se")
    return f"{bench['metrics']['pass@1']:.3f}" + ("" if se is None else f" ± {se:.3f}")


def print_table(results: dict) -> None:
    name = method_label(results["objective"], results["fpa"]["lam"], results["fpa"]["apply_to"],
                        results["fpa"].get("guard"))
    rows = [("reference", results["reference"]), (name, results["policy"])]
    names = list(results["reference"]["suite"]["benchmarks"])
    print(f"\n| model | {' | '.join(f'{n} pass@1 ± se' for n in names)} | {names[0]} process |\n|---|"
          + "---|" * (len(names) + 1))
    for label, r in rows:
        proc = "-" if r["process"] is None else f"{r['process']:.3f}"
        scores = " | ".join(_score(r["suite"]["benchmarks"][n]) for n in names)
        print(f"| {label} | {scores} | {proc} |")
    print("stage seconds:", results["stage_seconds"])


def previous_run(parts: TrainParts, run_dir: Path) -> float | None:
    """What a rerun in ``run_dir`` does (README, Resuming): ``None`` to (re)start or resume training.

    A run whose process is alive is refused with one line naming it. A finished run is not trained
    again: its results are printed and its pass@1 returned, unless ``train.resume=never``; one that
    finished with other result-changing settings is refused, naming them.
    """
    status = read_status(run_dir)
    now = state(status)
    if now == "running":
        raise FPAError(f"{run_dir} belongs to a run that is still alive ({describe_owner(status)}); wait for it, "
                       "stop it, or set hydra.run.dir=<another directory>")
    results_file = run_dir / "results.json"
    if now != "finished" or parts.train.resume == "never" or not results_file.exists():
        return None
    changed = differences(status["settings"], parts.config) if isinstance(status.get("settings"), dict) else []
    if changed:
        raise FPAError(f"{run_dir} finished with other settings: {', '.join(changed[:8])}; set train.resume=never "
                       "to train again with these, or hydra.run.dir=<another directory>")
    try:
        results = json.loads(results_file.read_text())
    except json.JSONDecodeError as e:
        raise FPAError(f"{results_file}: not valid JSON ({e.msg}); set train.resume=never to train again from "
                       "step 0, or delete the run directory") from None
    print(f"fpa-train: {run_dir} already finished; results: {results_file} (set train.resume=never to "
          "train again from step 0)")
    print_table(results)
    return float(results["policy"]["pass@1"])


@hydra_app("train")
def main(cfg: DictConfig) -> float | None:
    """Returns the policy's held-out pass@1: the value Hydra sweepers (Optuna) optimise."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    rank0 = is_global_zero()  # the other ranks of a multi-process run follow rank 0's decision
    try:
        parts = train_parts(cfg)  # every node built and checked: one clear line per problem, before any model loads
        done = previous_run(parts, run_dir) if rank0 else None
    except expected_errors() as err:
        raise one_line("fpa-train", err) from None
    if done is not None:
        return done
    if rank0:
        write_status(run_dir, "running", settings=result_config(parts.config))
    try:
        results = run_parts(parts, run_dir, HydraConfig.get().runtime.choices.get("objective"))
    except BaseException as err:
        interrupted = isinstance(err, KeyboardInterrupt)
        if rank0:
            write_status(run_dir, "interrupted" if interrupted else "failed", error=f"{type(err).__name__}: {err}")
        if isinstance(err, expected_errors()):
            raise one_line("fpa-train", err) from None
        raise
    if rank0:
        write_status(run_dir, "finished")
    return results["policy"]["pass@1"] if results else None


if __name__ == "__main__":
    main()
