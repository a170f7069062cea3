"""GPU check: training throughput of DPO and FPA-DPO at Qwen2.5-1.5B's shape, nothing downloaded.

Builds a randomly initialised model from the shape in conf/model/qwen2.5-math-1.5b.yaml (``arch``),
then runs the project's own training path (fpa.module.OfflineRLModule under a Lightning Trainer with
the trainer=gpu settings: bf16-mixed, fp32 master weights, gradient checkpointing, a bf16 frozen
reference) for a few steps of DPO (λ=0) and FPA-DPO (λ=1) on random token batches, and prints per
objective: step time, tokens/s, peak GPU memory and MFU (model FLOPs / step time / peak bf16 FLOPs).

    scripts/gpu_check.sh                 # on a GPU machine
    scripts/gpu_check.sh --tiny          # a smoke check of the script itself, on CPU, in seconds
    scripts/gpu_check.sh --pairs 16 --prompt-len 256 --completion-len 768 --steps 8

FLOPs counted (per step; T = all tokens, C = completion tokens, N = decoder-layer parameters,
L·H·S = layers × hidden × sequence for attention, V·H = the output layer):
policy forward + backward 6·N·T + 6·L·H·S·T (causal attention) + 6·V·H·C (log-probs on completion
tokens only), reference forward 2·N·T + 2·L·H·S·T + 2·V·H·C. Gradient-checkpointing recomputation
and the chunked log-prob backward's recomputation are not counted (MFU, not hardware utilisation).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "H800": 989.4, "A100": 312.0, "A800": 312.0, "L40S": 362.1,
                    "A10G": 125.0, "L4": 121.0, "4090": 165.2}


def build_config(tiny: bool):
    from omegaconf import OmegaConf
    from transformers import AutoConfig

    arch = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/qwen2.5-math-1.5b.yaml").arch)
    if tiny:
        arch.update(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    kind = arch.pop("model_type")
    return AutoConfig.for_model(kind, **arch)


def save_random_model(config, out: Path) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    return out


def random_batches(n: int, pairs: int, prompt_len: int, completion_len: int, vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows, seq = 2 * pairs, prompt_len + completion_len
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (rows, seq), generator=g)
        ids[pairs:, :prompt_len] = ids[:pairs, :prompt_len]  # a pair shares its prompt
        comp = torch.zeros(rows, seq, dtype=torch.bool)
        comp[:, prompt_len:] = True
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": comp,
                    "chosen": torch.arange(rows) < pairs, "reward": (torch.arange(rows) < pairs).float(),
                    "group": torch.arange(rows) % pairs})
    return out


def step_flops(config, rows: int, seq: int, completion_len: int, with_reference: bool) -> float:
    h, layers, v = config.hidden_size, config.num_hidden_layers, config.vocab_size
    head = v * h
    embed = v * h  # the input embedding is a lookup, not a matmul
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        total = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    tied = getattr(config, "tie_word_embeddings", False)
    n_layers = total - embed - (0 if tied else head)  # decoder layers + final norm
    t, c = rows * seq, rows * completion_len
    attn = layers * h * seq  # causal: half of 2·L·H·S per token forward (QKᵀ and AV)
    policy = 6 * n_layers * t + 6 * attn * t + 6 * head * c
    reference = 2 * n_layers * t + 2 * attn * t + 2 * head * c
    return float(policy + (reference if with_reference else 0))


class Timer:
    def __init__(self, warmup: int) -> None:
        import lightning as L

        outer = self

        class _CB(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    if batch_idx == warmup:
                        torch.cuda.reset_peak_memory_stats()
                outer._t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if batch_idx >= warmup:
                    outer.times.append(time.perf_counter() - outer._t0)
                outer.losses.append(float(outputs["loss"]))

        self.callback, self.times, self.losses = _CB(), [], []


def run_objective(name: str, lam: float, model_dir: Path, config, args, device: str) -> dict:
    import lightning as L

    from fpa.fpa import FuturePolicy
    from fpa.module import OfflineRLModule
    from fpa.optim import AdamW, WarmupCosine
    from fpa.objectives.dpo import DPO

    module = OfflineRLModule(str(model_dir), DPO(beta=0.1), FuturePolicy(lam=lam), dtype="bfloat16",
                             policy_dtype="float32", gradient_checkpointing=not args.no_grad_ckpt,
                             chunk_size=args.chunk_size, optimizer=AdamW(lr=1e-6), 
                             scheduler=WarmupCosine(warmup_steps=0, total_steps=args.warmup + args.steps),
                             sync_loss=False)
    batches = random_batches(args.warmup + args.steps, args.pairs, args.prompt_len, args.completion_len,
                             config.vocab_size)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    timer = Timer(args.warmup)
    trainer = L.Trainer(accelerator=device, devices=1, precision="bf16-mixed", max_steps=args.warmup + args.steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer.callback], num_sanity_val_steps=0)
    trainer.fit(module, loader)
    rows, seq = 2 * args.pairs, args.prompt_len + args.completion_len
    step = sum(timer.times) / len(timer.times)
    flops = step_flops(config, rows, seq, args.completion_len, with_reference=module.reference is not None)
    out = {"objective": name, "lambda": lam, "step_s": step, "tokens_per_s": rows * seq / step,
           "completion_tokens_per_s": rows * args.completion_len / step, "model_tflops_per_step": flops / 1e12,
           "losses_finite": all(x == x and abs(x) != float("inf") for x in timer.losses)}
    if torch.cuda.is_available():
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items()
                                         if k in torch.cuda.get_device_name()), None)
        out["mfu"] = flops / step / (peak * 1e12) if peak else None
        out["peak_bf16_tflops"] = peak
    else:
        out["peak_mem_gib"], out["mfu"] = None, None
    del trainer, module
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a tiny model of the same family: a CPU smoke check")
    p.add_argument("--steps", type=int, default=6, help="timed steps per objective")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--pairs", type=int, default=8, help="preference pairs per step (2× rows)")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--completion-len", type=int, default=768)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--no-grad-ckpt", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: by GPU name)")
    p.add_argument("--objectives", default="dpo,fpa-dpo")
    args = p.parse_args(argv)
    if args.tiny:
        args.prompt_len, args.completion_len = min(args.prompt_len, 16), min(args.completion_len, 32)
        args.pairs, args.steps, args.warmup = min(args.pairs, 2), min(args.steps, 2), min(args.warmup, 1)
        torch.set_num_threads(1)
    device = "gpu" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        print("gpu_check: no GPU here; run with --tiny for a CPU smoke check of the script", file=sys.stderr)
        return 2
    torch.set_float32_matmul_precision("high")
    config = build_config(args.tiny)
    print(f"gpu_check: {'tiny ' if args.tiny else ''}{config.model_type} hidden={config.hidden_size} "
          f"layers={config.num_hidden_layers} vocab={config.vocab_size} on "
          f"{torch.cuda.get_device_name() if device == 'gpu' else 'cpu'}; {2 * args.pairs} rows × "
          f"{args.prompt_len}+{args.completion_len} tokens per step, bf16-mixed, "
          f"gradient checkpointing {'off' if args.no_grad_ckpt else 'on'}", flush=True)
    lams = {"dpo": 0.0, "fpa-dpo": 1.0}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_random_model(config, Path(tmp) / "model")
        for name in args.objectives.split(","):
            results.append(run_objective(name, lams[name], model_dir, config, args, device))
    print("\n| objective | step (s) | tokens/s | peak memory (GiB) | MFU |\n|---|---|---|---|---|")
    for r in results:
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}"
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(f"| {r['objective']} (λ={r['lambda']:g}) | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {mem} | {mfu} |")
    print("GPU_CHECK_JSON " + json.dumps(results))
    return 0 if all(r["losses_finite"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
