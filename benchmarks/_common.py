"""Shared helpers for the benchmark scripts: interleaved timing, peak memory, models, data, tables.

Timing: every comparison runs its variants side by side in one process, interleaved (A B, B A,
A B, ...), after a warm-up, and reports the median over repeats and the median of the per-round
ratios (a paired ratio, robust to load that drifts while the benchmark runs).

Memory (CPU): the peak resident set size (RSS) of a run minus the RSS just before it. The kernel's
high-water mark ``VmHWM`` is reset by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), so
the peak belongs to the measured region alone; where that is refused the process-lifetime
``ru_maxrss`` is used instead, which is why full runs measure memory in a fresh subprocess per
configuration. Subprocesses run with ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB so glibc returns
every freed tensor to the OS at once and RSS follows the live tensors (glibc's default threshold
grows to 32 MiB and keeps freed blocks below it resident).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

# Before torch loads OpenMP: on a shared, oversubscribed CPU, OpenMP's default spin-waiting makes a
# 2-thread step up to 40x slower whenever another process holds one of the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

RESULT_TAG = "BENCH-RESULT "
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def set_threads(n: int | None) -> int:
    """Use ``n`` intra-op threads (None: torch's default); returns the previous count."""
    import torch

    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    return prev


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None, child: Callable[[dict], None] | None = None):
    """Parse with the options every benchmark shares: --threads, --quick and, for scripts that measure in a
    fresh subprocess, --child. Returns None after running a child's spec (the caller then returns "")."""
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="toy sizes (for the tests)")
    if child is not None:
        p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if child is not None and args.child:
        child(json.loads(args.child))
        return None
    return args


def run_with_threads(run: Callable[[Any], str], args, collect_peak: bool | None = None) -> str:
    """``run(args)`` with ``args.threads`` intra-op threads (restored after); peak-RSS sampling off in --quick."""
    prev = set_threads(args.threads)
    if collect_peak:
        PeakRSS.collect = not args.quick
    try:
        return run(args)
    finally:
        set_threads(prev)


def quiet() -> None:
    """Silence the warnings every script would otherwise repeat (self.log without a Trainer, TRL notes)."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "trl", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def silence_lightning() -> None:
    """Lightning sets its loggers' levels when imported: lower them afterwards."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- memory

def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:  # not Linux: the lifetime peak is all there is
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """``with PeakRSS() as m: ...`` → ``m.base_mb`` (RSS before), ``m.peak_mb`` (peak RSS), ``m.delta_mb``."""

    method = "VmHWM reset"
    collect = True  # gc.collect() first (~0.5 s with everything imported; --quick turns it off)

    def __enter__(self) -> "PeakRSS":
        if self.collect:
            gc.collect()
        self.base_mb = rss_mb()
        self.reset = _reset_peak()
        if not self.reset:
            PeakRSS.method = "ru_maxrss (lifetime)"
        return self

    def __exit__(self, *exc) -> None:
        kb = _status_kb("VmHWM") if self.reset else None
        if kb is None:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_mb = kb / 1024
        self.delta_mb = self.peak_mb - self.base_mb


def mem_available_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def run_child(script: Path, spec: dict[str, Any], timeout: float = 480) -> dict[str, Any]:
    """Run ``script --child '<json spec>'`` in a fresh interpreter; return the dict it reports."""
    env = {**os.environ, **MALLOC_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, str(script), "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=str(ROOT))
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"{script.name} child {spec} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")


def report_child(result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- timing

def interleaved(fns: dict[str, Callable[[], Any]], warmup: int = 1, repeats: int = 5) -> dict[str, list[dict]]:
    """Run each variant ``warmup`` times, then ``repeats`` rounds alternating the order (AB, BA, ...).

    A variant returns None (its wall time is used) or a dict of named segment times. Every round
    records ``total`` (wall seconds) and ``cpu`` (this process's CPU seconds, ``time.process_time``:
    on a shared machine far less sensitive than wall time to other processes taking the cores).
    Returns {variant: [segments per round]}.
    """
    names = list(fns)

    def once(name: str) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fns[name]()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if isinstance(out, dict):
            return {"total": wall, "cpu": cpu, **out}
        return {"total": out if isinstance(out, (int, float)) else wall, "cpu": cpu}

    for _ in range(warmup):
        for n in names:
            once(n)
    rounds: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            rounds[n].append(once(n))
    return rounds


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def seg(rounds: list[dict], key: str = "total") -> float:
    return median(r[key] for r in rounds if key in r)


def paired_ratio(a: list[dict], b: list[dict], key: str = "total") -> float:
    """Median over rounds of a[i]/b[i]."""
    return median(x[key] / y[key] for x, y in zip(a, b) if y.get(key))


def quartiles(values) -> tuple[float, float]:
    v = sorted(values)
    if len(v) < 2:
        return (v[0], v[0]) if v else (float("nan"), float("nan"))
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], q[2]


def ratio_text(a: list[dict], b: list[dict], key: str = "total") -> str:
    """'median [q1–q3]' of the per-round ratios a[i]/b[i]."""
    r = [x[key] / y[key] for x, y in zip(a, b) if y.get(key)]
    lo, hi = quartiles(r)
    return f"{median(r):.3f} [{lo:.2f}–{hi:.2f}]"


# ----------------------------------------------------------------------------- models, tokenizers, data

def word_tokenizer(vocab_size: int):
    """A whitespace word-level tokenizer with ``vocab_size`` ids: 4 specials, then words ``t4`` .. ``t{V-1}``.

    Text ``"t17 t905 "`` tokenizes to [17, 905], so a synthetic id sequence round-trips through any
    trainer that tokenizes text (TRL) exactly as the ids we hand our own collator.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from fpa.models.char_tokenizer import SPECIALS

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIALS), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")


def model_for(cfg_model, name: str) -> Path:
    """A benchmark config's model: ``"smollm"`` (the real SmolLM2-135M), else a random Llama of those sizes."""
    if cfg_model == "smollm":
        return smollm_model(tmpdir("smollm"))
    return build_model(tmpdir(f"model-{name}"), **cfg_model)


def build_model(out_dir: Path, vocab_size: int | None = None, hidden: int = 128, layers: int = 4, heads: int = 4,
                intermediate: int = 384, max_positions: int = 256, tie: bool = True, seed: int = 0) -> Path:
    """A randomly initialised Llama saved with ``save_pretrained`` (+ tokenizer): char vocab when ``vocab_size`` is None."""
    from fpa.models.tiny import build_tiny_model

    return build_tiny_model(out_dir, "llama", hidden_size=hidden, num_layers=layers, num_heads=heads,
                            intermediate_size=intermediate, max_positions=max_positions, seed=seed, tie=tie,
                            tokenizer=None if vocab_size is None else word_tokenizer(vocab_size))


def smollm_model(out: Path) -> Path:
    """SmolLM2-135M-Instruct converted from the shipped GGUF, with a word-level tokenizer of its vocabulary size."""
    from fpa.models.gguf import convert_gguf, find_shipped_gguf

    out = Path(out) / "smollm2-135m"
    if not (out / "config.json").exists():
        convert_gguf(find_shipped_gguf(), out)
        vocab = json.loads((out / "config.json").read_text())["vocab_size"]
        for stale in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            (out / stale).unlink(missing_ok=True)
        word_tokenizer(vocab).save_pretrained(out)
    return out


def n_params(path: Path) -> int:
    import json as _json

    cfg = _json.loads((Path(path) / "config.json").read_text())
    h, v, L, i = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    kv = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    kv_width = kv * cfg.get("head_dim", h // cfg["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kv_width + 3 * h * i + 2 * h
    return v * h * (1 if cfg.get("tie_word_embeddings") else 2) + L * per_layer + h


def synthetic_pairs(n: int, prompt_len: int, chosen_len: int, rejected_len: int, vocab: int, seed: int = 0,
                    first_id: int = 4, eos_id: int = 2) -> list[dict[str, list[int]]]:
    """``n`` preference examples of fixed lengths (completions end with EOS, as the project tokenises them)."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(first_id, vocab, (k,), generator=g).tolist()

    return [{"prompt_ids": ids(prompt_len), "chosen_ids": ids(chosen_len - 1) + [eos_id],
             "rejected_ids": ids(rejected_len - 1) + [eos_id]} for _ in range(n)]


def batch_tokens(batch) -> int:
    return int(batch["attention_mask"].sum())


# ----------------------------------------------------------------------------- output

def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()}-core {cpu}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"{_dt.date.today().isoformat()}")


def table(title: str, header: list[str], rows: list[list[Any]], note: str | None = None) -> str:
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
        return str(x)

    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = [f"## {title}", "", "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    if note:
        lines += ["", note]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def tmpdir(prefix: str) -> Path:
    """A temporary directory removed when this process exits (models are saved here, children read them)."""
    import atexit
    import shutil

    path = Path(tempfile.mkdtemp(prefix=f"fpa-bench-{prefix}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
