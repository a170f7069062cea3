"""Sampling backend on transformers (batched, KV cache); runs on CPU and GPU.

Jobs (prompt, sample) are batched in order, ``batch_size`` at a time, left-padded; batch ``b`` seeds the
global torch RNG with ``seed * 1_000_003 + b``, so the same seed and batch size give the same samples.
Each batch is decoded by :func:`fpa.generation.decode.decode` (finished rows leave the batch; the same
samples as ``generate``) or, where the model's generation config asks for more than temperature/top-p,
or with ``engine="generate"``, by transformers ``generate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from fpa.generation.decode import decode, supported


@dataclass
class Sample:
    prompt_index: int
    sample_index: int
    completion: str
    finish_reason: str  # "stop" (EOS) or "length"
    n_tokens: int  # completion tokens, not counting the EOS
    # The ids exactly as the model saw and sampled them: the prompt as fed to generate (no padding),
    # the completion ending with the EOS id only when finish_reason == "stop" (nothing after it).
    # Empty lists: a generator that does not report ids (the records then carry none: the text path).
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    # The sampling policy's log-prob of each completion id at temperature 1 (rollouts: fpa.generation.behaviour);
    # None: not recorded.
    logprobs: list[float] | None = None


@dataclass
class HFGenerator:
    model: object
    tokenizer: object
    batch_size: int = 64
    max_new_tokens: int = 64
    progress: bool = True
    tokens_per_second: float = 0.0  # of the last ``sample`` call
    engine: str = "loop"  # "loop": fpa.generation.decode where supported; "generate": transformers generate

    def _new_tokens(self, enc, temperature: float, top_p: float) -> torch.Tensor:
        """``[B, <= max_new_tokens]`` new ids of a left-padded batch (pad after EOS), RNG already seeded."""
        tok = self.tokenizer
        if self.engine == "loop" and supported(self.model):
            eos = -1 if tok.eos_token_id is None else tok.eos_token_id  # none: every row runs to max_new_tokens
            pad = tok.pad_token_id if tok.pad_token_id is not None else max(eos, 0)
            return decode(self.model, enc["input_ids"], enc["attention_mask"], max_new_tokens=self.max_new_tokens,
                          eos_id=eos, pad_id=pad, temperature=temperature, top_p=top_p)
        if self.engine not in ("loop", "generate"):
            raise ValueError(f"engine must be 'loop' or 'generate', got {self.engine!r}")
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 \
            else {"do_sample": False}
        gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id, top_k=None, **sampling)
        return gen[:, enc["input_ids"].shape[1]:]

    @torch.no_grad()
    def sample(self, prompts: list[str], n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
               seed: int = 0, desc: str = "generate") -> list[Sample]:
        """``n`` completions per prompt. The same seed and batch size give the same samples."""
        jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        out, n_tokens, start = [], 0, time.perf_counter()
        bar = tqdm(total=len(jobs), desc=desc, disable=not self.progress, leave=False)
        try:
            for b, s in enumerate(range(0, len(jobs), self.batch_size)):
                chunk = jobs[s: s + self.batch_size]
                enc = tok([prompts[i] for i, _ in chunk], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
                torch.manual_seed(seed * 1_000_003 + b)
                new = self._new_tokens(enc, temperature, top_p)
                fed = [[t for t, m in zip(ids, mask) if m] for ids, mask in
                       zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())]  # left padding removed
                for (i, j), prompt_ids, row in zip(chunk, fed, new.tolist()):
                    stop = tok.eos_token_id in row
                    row = row[: row.index(tok.eos_token_id)] if stop else row
                    n_tokens += len(row) + int(stop)
                    out.append(Sample(i, j, tok.decode(row, skip_special_tokens=True), "stop" if stop else "length",
                                      len(row), prompt_ids, row + [tok.eos_token_id] if stop else row))
                bar.update(len(chunk))
                bar.set_postfix(tok_s=f"{n_tokens / (time.perf_counter() - start):.0f}")
        finally:
            bar.close()
            tok.padding_side = side
            self.model.train(was_training)
        self.tokens_per_second = n_tokens / max(time.perf_counter() - start, 1e-9)
        return out
