"""The behaviour policy's log-probs of its own samples, at temperature 1 (rollouts during training).

GRPO's ratio π_θ/μ needs μ's log-prob of every sampled id. Whatever temperature the samples were drawn at, the
stored value is the policy's own log-prob (temperature 1), as the issue's GRPO and TRL define it: one
teacher-forced forward of the sampling model over prompt + completion, scored by the same chunked code that
scores the training batches (:func:`fpa.logprobs.completion_logprobs`), so the first update of an on-policy
round sees a ratio of 1 up to float rounding.
"""

from __future__ import annotations

import torch

from fpa.data.collate import pad_rows
from fpa.generation.hf import Sample
from fpa.ledger import Pass
from fpa.logprobs import completion_logprobs


@torch.no_grad()
def score_samples(model, samples: list[Sample], pad_id: int, batch_size: int = 64, chunk_size: int = 1024) -> Pass:
    """Set each sample's ``logprobs`` (one per completion id) from ``model`` in eval mode; returns the forward's
    ledger pass (prompt + completion tokens, the completion's projected)."""
    scored = Pass()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            for s in chunk:
                if not s.prompt_ids or not s.completion_ids:
                    raise ValueError("score_samples: a sample without its token ids (the generator reported none)")
            rows = [(list(s.prompt_ids), list(s.completion_ids), True, 0.0, i) for i, s in enumerate(chunk)]
            batch = pad_rows(rows, pad_id)
            lp = completion_logprobs(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                     batch["completion_mask"].to(device), chunk_size=chunk_size)
            for s, values, mask in zip(chunk, lp.policy.float().cpu(), lp.mask.cpu()):
                s.logprobs = values[mask].tolist()
                scored.add([len(s.prompt_ids) + len(s.completion_ids)], projected=len(s.completion_ids))
    finally:
        model.train(was_training)
    return scored
