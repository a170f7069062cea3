"""docs/results/smollm/report.md from the experiment=smollm runs and their larger re-evaluations.

    python scripts/smollm_report.py --runs dpo=/work/runs/smollm_dpo fpa_dpo=/work/runs/smollm_fpa_dpo ... \
        --evals reference=/work/runs/evalk8/reference dpo=/work/runs/evalk8/dpo ... --out docs/results/smollm

Each run's results.json (in-run evaluation: 200 problems × 2 samples) and each fpa-eval directory
(the same 200 problems × 8 samples) are copied under ``--out`` with their samples, and the report
table is generated from those copies: pass@1 ± standard error, and paired differences (policy −
reference, method − DPO) with 95% bootstrap CIs over problems (fpa.reporting.paired).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from fpa.reporting.paired import paired_difference, per_problem

LABELS = {"reference": "reference (SFT warm start)", "dpo": "DPO", "fpa_dpo": "FPA-DPO (λ=1)", "rft": "RFT",
          "lora_fpa_dpo": "FPA-DPO (λ=1), LoRA"}


def pairs(items: list[str]) -> dict[str, Path]:
    return {k: Path(v) for k, v in (i.split("=", 1) for i in items)}


def copy_runs(runs: dict[str, Path], evals: dict[str, Path], out: Path) -> None:
    for name, run in runs.items():
        dest = out / "runs" / name
        (dest / "samples").mkdir(parents=True, exist_ok=True)
        results = json.loads((run / "results.json").read_text())
        shutil.copy(run / "eval" / "samples" / "arith.jsonl", dest / "samples" / "policy.jsonl")
        shutil.copy(Path(results["reference"]["dir"]) / "samples" / "arith.jsonl", dest / "samples" / "reference.jsonl")
        for side in ("reference", "policy"):  # the copy stands alone: no machine-specific paths, no nested suite
            results[side] = {k: v for k, v in results[side].items() if k not in ("dir", "suite")}
        (dest / "results.json").write_text(json.dumps(results, indent=2))
        shutil.copy(run / ".hydra" / "config.yaml", dest / "config.yaml")
        metrics = next(run.glob("csv/*/metrics.csv"), None)
        if metrics is not None:
            shutil.copy(metrics, dest / "metrics.csv")
    for name, ev in evals.items():
        dest = out / "evals_k8" / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(ev / "samples" / "arith.jsonl", dest / "samples.jsonl")
        report = json.loads((ev / "results.json").read_text())
        (dest / "results.json").write_text(json.dumps({k: report[k] for k in ("settings", "benchmarks", "prompt")
                                                       if k in report}, indent=2, default=str))


def table(out: Path) -> str:
    runs = sorted(p.name for p in (out / "runs").iterdir()) if (out / "runs").exists() else []
    order = [n for n in LABELS if n in runs] + [n for n in runs if n not in LABELS]
    lines = ["## In-run evaluation (200 held-out problems × 2 samples, T=0.6)", "",
             "| method | train s | s / step | reference pass@1 ± se | policy pass@1 ± se | policy − reference "
             "[95% CI] |", "|---|---|---|---|---|---|"]
    for name in order:
        d = out / "runs" / name
        res = json.loads((d / "results.json").read_text())
        diff = paired_difference(per_problem(d / "samples" / "policy.jsonl"),
                                 per_problem(d / "samples" / "reference.jsonl"))
        steps = yaml.safe_load((d / "config.yaml").read_text())["train"]["max_steps"]
        train_s = res["stage_seconds"]["train"]
        lines.append(f"| {LABELS.get(name, name)} | {train_s:.0f} | {train_s / steps:.1f} | "
                     f"{diff['reference']:.3f} ± {diff['se_reference']:.3f} | {diff['policy']:.3f} ± "
                     f"{diff['se_policy']:.3f} | {diff['difference']:+.3f} [{diff['ci_low']:+.3f}, "
                     f"{diff['ci_high']:+.3f}] |")
    evals = out / "evals_k8"
    if evals.exists():
        scores = {p.name: per_problem(p / "samples.jsonl") for p in sorted(evals.iterdir())}
        lines += ["", "## Re-evaluation (the same 200 problems × 8 samples, T=0.6: 1,600 samples per model)", "",
                  "| model | pass@1 ± se | − reference [95% CI] | excludes 0 | − DPO [95% CI] | excludes 0 |",
                  "|---|---|---|---|---|---|"]
        for name in [n for n in LABELS if n in scores]:
            row = [LABELS[name]]
            own = paired_difference(scores[name], scores[name], n_boot=10)
            row.append(f"{own['policy']:.3f} ± {own['se_policy']:.3f}")
            for base in ("reference", "dpo"):
                if base in scores and name != base and not (base == "dpo" and name == "reference"):
                    d = paired_difference(scores[name], scores[base])
                    row += [f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
                            "yes" if d["excludes_zero"] else "no"]
                else:
                    row += ["-", "-"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=[])
    ap.add_argument("--evals", nargs="*", default=[])
    ap.add_argument("--out", default="docs/results/smollm")
    args = ap.parse_args()
    out = Path(args.out)
    copy_runs(pairs(args.runs), pairs(args.evals), out)
    text = table(out)
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
