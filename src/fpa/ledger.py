"""Compute ledger: tokens and FLOPs per stage of a run, next to its wall seconds (``results.json["ledger"]``).

The FLOP formula, in this one place (per token, for a decoder of ``n_layers`` layers of width ``d``):

- forward: ``2·N`` + ``2·n_layers·L·d`` (attention: scores and weighted sum over the ``L`` tokens of
  the token's sequence, Kaplan et al.'s ``2·n_layer·n_ctx·d_attn`` with ``n_ctx`` the sequence's own
  length, not halved for causality), + ``2·V·H`` for each token the output layer projects;
- backward: twice the forward of the same tokens (``4·N`` per token, plus attention and output layer).

``N`` counts every parameter except the input embedding and the output layer (a gather and the
``V·H`` projection priced separately, on the tokens actually projected: completion tokens in
training, sampled tokens in generation). LoRA adapters count in ``N``; the backward of a LoRA
policy is priced like a full one (it still propagates through the frozen base).

Token kinds per stage (``TOKEN_KINDS``): ``generated`` (sampled tokens), ``policy_forward`` (tokens
through a forward of the model being trained or sampled: prompts' prefill included in
generation), ``reference_forward`` and ``backward``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

TOKEN_KINDS = ("generated", "policy_forward", "reference_forward", "backward")


@dataclass(frozen=True)
class ModelSize:
    """What the FLOP formula needs of a model."""

    params: int  # N: non-embedding parameters (input embedding and output layer excluded)
    head: int  # V·H: the output layer's weights
    n_layers: int
    d_model: int

    @classmethod
    def of(cls, model) -> "ModelSize":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft (LoRA) policy
        skip = {id(p) for m in (base.get_input_embeddings(), base.get_output_embeddings()) if m is not None
                for p in m.parameters()}
        params = sum(p.numel() for p in model.parameters() if id(p) not in skip)
        out = base.get_output_embeddings()
        head = out.weight.numel() if out is not None else 0
        return cls(params, head, int(base.config.num_hidden_layers), int(base.config.hidden_size))

    @classmethod
    def of_pretrained(cls, path: str, trust_remote_code: bool = False) -> "ModelSize":
        """The size of a saved model without reading its weights (built on the meta device)."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        return cls.of(model)

    def forward(self, tokens: int, projected: int, squared_lengths: int) -> int:
        """FLOPs of one forward over ``tokens`` tokens, ``projected`` of them through the output layer;
        ``squared_lengths``: Σ L² over the sequences they belong to (Σ over tokens of their sequence's length)."""
        return 2 * self.params * tokens + 2 * self.head * projected + 2 * self.n_layers * self.d_model * squared_lengths


@dataclass
class Pass:
    """One kind of pass over some tokens: the three sums the formula needs."""

    tokens: int = 0
    projected: int = 0
    squared_lengths: int = 0

    def add(self, lengths: Iterable[int], projected: int) -> None:
        lengths = [int(n) for n in lengths]
        self.tokens += sum(lengths)
        self.squared_lengths += sum(n * n for n in lengths)
        self.projected += int(projected)

    def flops(self, size: ModelSize) -> int:
        return size.forward(self.tokens, self.projected, self.squared_lengths)

    def __add__(self, other: "Pass") -> "Pass":
        return Pass(self.tokens + other.tokens, self.projected + other.projected,
                    self.squared_lengths + other.squared_lengths)


def entry(size: ModelSize | None, *, seconds: float | None, generated: int = 0, policy: Pass | None = None,
          reference: Pass | None = None, backward: Pass | None = None, cached: bool = False) -> dict[str, Any]:
    """A stage's ledger entry: tokens per kind, FLOPs (``None`` without a model size), wall seconds."""
    policy, reference, backward = policy or Pass(), reference or Pass(), backward or Pass()
    tokens = {"generated": int(generated), "policy_forward": policy.tokens, "reference_forward": reference.tokens,
              "backward": backward.tokens}
    flops = None if size is None else (policy.flops(size) + reference.flops(size) + 2 * backward.flops(size))
    return {"tokens": tokens, "flops": flops, "seconds": None if seconds is None else round(float(seconds), 3),
            "cached": bool(cached)}


def total(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sum of every stage's entry, cached ones included at their original cost (see the README: a
    shared one-off stage is attributed in full to each run that uses it). ``flops``/``seconds`` are
    ``None`` if a stage lacks them."""
    def add(key):
        values = [s[key] for s in stages.values()]
        return None if any(v is None for v in values) else sum(values)

    return {"tokens": {k: sum(s["tokens"][k] for s in stages.values()) for k in TOKEN_KINDS},
            "flops": add("flops"), "seconds": None if add("seconds") is None else round(add("seconds"), 3),
            "cached_flops": sum(s["flops"] or 0 for s in stages.values() if s["cached"])}


def ledger(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json["ledger"]``."""
    return {"stages": stages, "total": total(stages)}


def generation_entry(size: ModelSize | None, samples: Iterable[tuple[int, int]], seconds: float | None,
                     cached: bool = False) -> dict[str, Any]:
    """Sampling: ``samples`` are (prompt tokens, generated tokens) pairs; each sample's prompt is prefilled
    and each generated token is one more forward whose logits the output layer projects. A sequence of
    prompt + completion length L is priced as one forward over L tokens (its attention ~ L² as in training)."""
    fwd, generated = Pass(), 0
    for prompt, completion in samples:
        fwd.add([prompt + completion], projected=completion)
        generated += completion
    return entry(size, seconds=seconds, generated=generated, policy=fwd, cached=cached)


def trajectory_entry(size: ModelSize | None, trajectories: Path, tokenizer, cached: bool) -> dict[str, Any]:
    """The generation stage from its set: records' prompt/completion lengths, ``stats.json``'s seconds."""
    from fpa.data.records import load_trajectories

    stats_file = Path(trajectories) / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    samples = []
    records, _ = load_trajectories(Path(trajectories), skip_invalid=True)  # invalid records: their cost is unknown
    for r in records:
        ids = r.get("prompt_ids")
        n_prompt = len(ids) if ids else len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"])
        n = r.get("n_tokens")
        if n is None:  # a set written without token counts
            n = len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"])
        samples.append((n_prompt, int(n)))
    return generation_entry(size, samples, stats.get("generation_seconds"), cached)


def evaluation_entry(size: ModelSize | None, eval_dir: Path, tokenizer, cached: bool) -> dict[str, Any]:
    """An evaluation from its directory: every benchmark's samples file, seconds summed over benchmarks."""
    report = json.loads((Path(eval_dir) / "results.json").read_text())
    samples, seconds = [], 0.0
    for bench in report["benchmarks"].values():
        seconds += float(bench.get("seconds") or 0.0)
        with open(Path(eval_dir) / bench["samples_file"]) as f:
            for line in f:
                row = json.loads(line)
                samples.append((len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]),
                                int(row["n_tokens"])))
    return generation_entry(size, samples, seconds, cached)


def rollout_entry(size: ModelSize | None, rollouts: Path, tokenizer) -> dict[str, Any]:
    """Rollouts during training (``<run_dir>/rollouts/round_*``): every round's sampling, as
    :func:`trajectory_entry` prices it, plus the teacher-forced forward that scored the behaviour log-probs
    (prompt + completion, the completion projected). Seconds: the rounds' ``stats.json`` (scoring included).
    ``rounds`` lists each round's step (the optimizer steps taken before it was sampled), FLOPs and seconds, so
    a report can place the compute spent by any step (:mod:`fpa.reporting.compute_curves`)."""
    from fpa.data.records import load_trajectories

    rounds, generated = [], 0
    both = Pass()
    for round_dir in sorted(Path(rollouts).glob("round_*")):
        stats_file = round_dir / "stats.json"
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        manifest = json.loads((round_dir / "manifest.json").read_text())
        records, _ = load_trajectories(round_dir, skip_invalid=True)
        one = Pass()
        for r in records:
            n_prompt, ids = len(r["prompt_ids"]), r["completion_ids"]
            one.add([n_prompt + int(r["n_tokens"])], projected=int(r["n_tokens"]))  # sampling
            generated += int(r["n_tokens"])
            if r.get("behaviour_logprobs") is not None:  # the scoring forward
                one.add([n_prompt + len(ids)], projected=len(ids))
        both += one
        rounds.append({"step": int(manifest["config"].get("step", 0)),
                       "flops": None if size is None else one.flops(size),
                       "seconds": float(stats.get("generation_seconds") or 0.0)})
    seconds = sum(r["seconds"] for r in rounds)
    return {**entry(size, seconds=seconds, generated=generated, policy=both), "rounds": rounds}
