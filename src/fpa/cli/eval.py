"""fpa-eval: a benchmark suite on a Lightning checkpoint, a saved model directory or a hub model id.

    fpa-eval model_path=outputs/runs/X/policy                        # the embedded suite, offline
    fpa-eval model_path=Qwen/Qwen2.5-Math-1.5B model=qwen2.5-math-1.5b benchmark=math7 generate.backend=vllm
    fpa-eval model_path=last.ckpt base_model=<the model it was trained from>

Writes to ``out_dir`` (default: the Hydra run directory):

- ``results.json``: per benchmark pass@1 / pass@k / maj@k, problem and sample counts, unverifiable
  checks, throughput, and every setting that produced them (model, backend, sampling seed, k,
  temperature, top-p, max new tokens, batch size, prompt format, instruction);
- ``results.md``: the same as a markdown table, with the unweighted average;
- ``samples/<benchmark>.jsonl``: every completion with its extracted answer and verdict.

A ``.ckpt`` is turned into a model directory first (``<out_dir>/model``): the ``policy.*`` weights
of the checkpoint are loaded into ``base_model``'s architecture (``base_model``: the directory or
hub id it was trained from; by default the checkpoint's ``policy_path`` hyper-parameter).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fpa.cli.app import expected_errors, hydra_app, one_line
from fpa.guards import ConfigError
from fpa.models.loading import load_tokenizer


def _model_kind(path: str) -> str:
    p = Path(path).expanduser()
    if p.is_file():
        return "checkpoint"
    if p.is_dir():
        return "directory"
    return "hub"


def checkpoint_to_model_dir(ckpt_path: str | Path, out: Path, base_model: str | None, dtype: str = "float32",
                            tokenizer: str | None = None, trust_remote_code: bool = False) -> tuple[Path, str]:
    """Load a Lightning checkpoint's ``policy.*`` weights into ``base_model``'s architecture and save it.

    Returns (model directory, base model used). The checkpoint is read with
    :func:`fpa.safe_load.torch_load` (``weights_only=True``: tensors, numbers, strings and plain
    containers, which is all this project's checkpoints hold, hyper-parameters included); a file that
    needs anything else (a crafted pickle could run code) is refused with one line, before any model
    loads.
    """
    from fpa.guards import UnsafeFileError
    from fpa.models.loading import load_model
    from fpa.safe_load import torch_load

    try:
        ckpt = torch_load(ckpt_path, map_location="cpu")
    except UnsafeFileError as e:
        raise SystemExit(f"fpa-eval: {e}") from None
    except Exception as e:  # noqa: BLE001 - a truncated / foreign file: say so in one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise SystemExit(f"fpa-eval: {ckpt_path} is not a readable torch checkpoint ({type(e).__name__}: "
                         f"{first})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise SystemExit(f"fpa-eval: {ckpt_path} is not a Lightning checkpoint (no state_dict)")
    base = base_model or (ckpt.get("hyper_parameters") or {}).get("policy_path")
    if not base:
        raise SystemExit(f"fpa-eval: {ckpt_path} does not record the model it was trained from; "
                         "pass base_model=<model directory or hub id>")
    state = {k[len("policy."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("policy.")}
    if not state:
        raise SystemExit(f"fpa-eval: {ckpt_path} holds no policy.* weights")
    model = load_model(str(base), dtype, trust_remote_code=trust_remote_code)
    lora = (ckpt.get("hyper_parameters") or {}).get("lora")
    if lora:  # a LoRA run's checkpoint holds only the adapters: wrap the base, load them, merge
        from fpa.models.lora import LoraSettings

        peft_model = LoraSettings(**lora).wrap(model)
        missing, unexpected = peft_model.load_state_dict(state, strict=False)
        missing = [k for k in missing if "lora_" in k]
        model = peft_model.merge_and_unload()
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise SystemExit(f"fpa-eval: {ckpt_path} does not fit {base}: missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    load_tokenizer(tokenizer or str(base), trust_remote_code).save_pretrained(out)
    return out, str(base)


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    from fpa.config.parts import eval_parts
    from fpa.models.spec import check_input_path
    from fpa.stages.evaluate import evaluate_to

    if OmegaConf.is_missing(cfg, "model_path") or not cfg.model_path:
        raise ConfigError("model_path: set model_path=<Lightning .ckpt | saved model directory | hub model id>")
    parts = eval_parts(cfg)  # checked before any model loads
    try:
        for key in ("model_path", "base_model", "tokenizer"):
            check_input_path(key, cfg.get(key), "path")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, suite = parts.model, parts.benchmark
    model_path, kind, base = str(cfg.model_path), _model_kind(str(cfg.model_path)), None
    if kind == "checkpoint":
        converted, base = checkpoint_to_model_dir(model_path, out_dir / "model", cfg.base_model, model.dtype,
                                                  cfg.tokenizer, model.trust_remote_code)
        model_path = str(converted)
    result, report = evaluate_to(model_path, suite, model.prompt, parts.generate, out_dir, dtype=model.dtype,
                                 tokenizer=cfg.tokenizer, trust_remote_code=model.trust_remote_code,
                                 progress=bool(cfg.progress), save_samples=bool(cfg.save_samples))
    report["model"].update({"model_path": str(cfg.model_path), "kind": kind, "evaluated_path": model_path,
                            "base_model": base})
    report["sampling"] = {"seed": suite.seed, "batch_size": suite.batch_size, "k": suite.k,
                          "temperature": suite.temperature, "top_p": suite.top_p,
                          "note": "hf backend: the same seed and batch size give the same completions"}
    report["benchmark_config"] = parts.config["benchmark"]
    report["wall_s"] = round(time.perf_counter() - start, 2)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
    title = f"{cfg.model_path} — {result.suite or 'suite'} ({parts.generate.backend})"
    table = result.markdown(title)
    (out_dir / "results.md").write_text(table)
    print(table)
    print(f"results: {out_dir / 'results.json'}")
    return report


@hydra_app("eval")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, cfg.out_dir or HydraConfig.get().runtime.output_dir)
    except expected_errors() as err:
        raise one_line("fpa-eval", err) from None


if __name__ == "__main__":
    main()
