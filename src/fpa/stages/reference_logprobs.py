"""Stage `reference_logprobs`: the reference's token log-probs of every training example, computed once.

With ``train.precompute_reference`` on (``auto``: wherever :func:`fpa.data.reference.blocker` allows
it, i.e. an objective with ``reference_on_served_rows`` and FPA off), the train stage scores every
training example's rows with the reference before training, without gradient, through the same
collator and :func:`fpa.logprobs.completion_logprobs` the training step uses, attaches them to the
examples (:mod:`fpa.data.reference`), and trains without loading the reference model.

The entry lives at ``<cache_dir>/reference_logprobs/<key>`` (:func:`fpa.stages.cache.cached_stage`),
one safetensors file: ``values`` (every example's scored tokens, concatenated) and ``offsets``
(``[n_examples + 1]``). The key is the hash of the reference's identity (its resolved path and the
size and modification time of its files), the rows' token ids (:func:`fpa.data.reference.rows_digest`:
trajectories, pairing and its seed, tokenizer, ``max_length``, ``overlong``), the data kind and the
numeric setting (weights dtype, autocast dtype). A resumed run, or another run on the same examples
and reference, reuses the entry. Examples are scored in batches of similar length (a token budget),
so the values depend on the data only, not on the micro-batch or the number of processes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fpa.config.keys import stage_key
from fpa.data.reference import attach, per_example, rows_digest, rows_of
from fpa.stages.cache import CorruptEntryError, cached_stage

STAGE, VERSION = "reference_logprobs", "1"
FILE = "reference_logprobs.safetensors"
TOKEN_BUDGET = 16384  # padded tokens per scoring batch
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".gguf")


def reference_identity(path: str) -> dict[str, Any]:
    """The reference's resolved path and, for a local directory, the size and mtime of its weight and config files."""
    p = Path(path).expanduser()
    if not p.exists():
        return {"path": str(path)}  # a hub name: its revision is what the hub serves under it
    files = sorted(f for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    return {"path": str(p.resolve()),
            "files": [[str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns]
                      for f in files]}


def length_batches(examples: list[dict[str, Any]], kind: str, token_budget: int = TOKEN_BUDGET) -> list[list[int]]:
    """Example indices in batches of similar length whose padded rows stay within ``token_budget`` tokens."""
    sizes = []
    for k, ex in enumerate(examples):
        rows = rows_of(ex, kind)
        sizes.append((max(len(p) + len(c) for p, c, *_ in rows), len(rows), k))
    batches, current, n_rows = [], [], 0
    for width, rows, k in sorted(sizes):
        if current and (n_rows + rows) * width > token_budget:
            batches.append(current)
            current, n_rows = [], 0
        current.append(k)
        n_rows += rows
    return batches + ([current] if current else [])


@torch.no_grad()
def score(model, examples: list[dict[str, Any]], kind: str, pad_id: int, chunk_size: int = 1024,
          token_budget: int = TOKEN_BUDGET, device: str | torch.device = "cpu",
          autocast: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """(values, offsets): every example's rows scored by ``model``, example k's at ``values[offsets[k]:offsets[k+1]]``.

    Rows are built and padded by the training collator and scored by the training log-prob code, so
    each value is what the training step's reference forward gives for that token.
    """
    from fpa.data.collate import ROW_BUILDERS, Collator
    from fpa.logprobs import completion_logprobs

    collate = Collator(kind, pad_id)
    out: list[Tensor | None] = [None] * len(examples)
    device = torch.device(device)
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    for idx in length_batches(examples, kind, token_budget):
        chunk = [examples[k] for k in idx]
        batch = collate(chunk)
        with amp:
            lp = completion_logprobs(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                     batch["completion_mask"].to(device), chunk_size=chunk_size)
        values, mask = lp.policy.cpu(), lp.mask.cpu()  # the compute dtype: fp32 (fp64 for a fp64 model)
        rows = ROW_BUILDERS[kind](chunk)
        for k, v in zip(idx, per_example(rows, [values[r][mask[r]] for r in range(len(rows))], len(chunk))):
            out[k] = v
    lengths = torch.tensor([0] + [v.numel() for v in out], dtype=torch.long)
    values = torch.cat(out) if out else torch.empty(0)
    return values.contiguous(), lengths.cumsum(0)


def precompute(reference: str, examples: list[dict[str, Any]], kind: str, pad_id: int, cache_dir: str | Path,
               dtype: str = "float32", autocast: str | None = None, device: str = "cpu",
               trust_remote_code: bool = False, chunk_size: int = 1024) -> tuple[Path, bool]:
    """Score ``examples`` with ``reference`` (or reuse the cached entry) and attach the values to them.

    Returns (cache entry, was_cached). ``autocast``: a dtype name (the trainer's mixed precision) or None.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    inputs = {"reference": reference_identity(reference), "rows": rows_digest(examples, kind), "kind": kind,
              "dtype": dtype, "autocast": autocast}
    key = stage_key(STAGE, VERSION, **inputs)

    def build(tmp: Path) -> None:
        from fpa.models.loading import load_model

        model = load_model(reference, dtype, trust_remote_code, frozen=True).to(device)
        model.config.use_cache = False
        values, offsets = score(model, examples, kind, pad_id, chunk_size=chunk_size, device=device,
                                autocast=getattr(torch, autocast) if autocast else None)
        save_file({"values": values, "offsets": offsets}, str(tmp / FILE), metadata={"rows": inputs["rows"]})
        del model

    entry, cached = cached_stage(cache_dir, STAGE, key, inputs, build)
    with safe_open(str(entry / FILE), "pt") as f:  # tensors and a string map only: nothing in the file is executed
        if (f.metadata() or {}).get("rows") != inputs["rows"]:
            raise CorruptEntryError(f"{entry / FILE}: made for other examples than its key says; delete the cache "
                                    f"entry {entry} and rerun to rebuild it")
        attach(examples, f.get_tensor("values"), f.get_tensor("offsets"))
    return entry, cached


def numerics(model, trainer, lora: bool) -> tuple[str, str | None, str]:
    """(weights dtype, autocast dtype, device) matching the training step's reference forward.

    The reference is loaded in ``model.dtype`` (with LoRA it is the policy, whose weights are fp32 under
    mixed precision); mixed precision runs the step under autocast, ``*-true`` precisions convert the weights.
    """
    precision = trainer.precision if trainer is not None else "32-true"
    dtype = model.dtype
    if lora and trainer is not None and trainer.precision_is_mixed:
        dtype = "float32"
    if precision.startswith("bf16-true"):
        dtype = "bfloat16"
    elif precision.startswith("16-true"):
        dtype = "float16"
    autocast = {"bf16-mixed": "bfloat16", "16-mixed": "float16"}.get(precision)
    accelerator = str((trainer.node.get("accelerator") if trainer is not None else None) or "auto")
    device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    return dtype, autocast, device


def for_training(parts, reference: str, data) -> tuple[Path, bool]:
    """The train stage's call: ``data`` (a set-up TrajectoryDataModule) gets its examples' reference log-probs."""
    dtype, autocast, device = numerics(parts.model, parts.trainer, parts.model.lora is not None)
    entry, cached = precompute(reference, data.train_set, data.kind, data.tokenizer.pad_token_id, parts.cache_dir,
                               dtype=dtype, autocast=autocast, device=device,
                               trust_remote_code=parts.model.trust_remote_code, chunk_size=parts.module.chunk_size)
    from fpa.ranks import is_global_zero

    if is_global_zero():
        print(f"fpa-train: reference log-probs of {len(data.train_set)} examples "
              f"{'reused from' if cached else 'computed once into'} {entry}; training without the reference model",
              flush=True)
    return entry, cached
