"""KTO's reference point z is the mean log-ratio over the global batch: every rank's KL rows."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fpa.objectives.base import ObjectiveInputs
from fpa.objectives.kto import KTO

ROWS = {0: 3, 1: 5}  # unequal shares, so a mean of per-rank means would differ from the global mean


def _kl_rows(rank: int) -> ObjectiveInputs:
    g = torch.Generator().manual_seed(rank)
    n = ROWS[rank]
    policy = -torch.rand(n, 4, generator=g, dtype=torch.float64)
    reference = policy - torch.rand(n, 4, generator=g, dtype=torch.float64)  # policy above reference: z > 0
    return ObjectiveInputs(policy=policy, mask=torch.ones(n, 4, dtype=torch.bool), reference=reference)


def _worker(rank: int, init_file: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        kl = _kl_rows(rank)
        x = ObjectiveInputs(policy=kl.policy[:1], mask=kl.mask[:1], reference=kl.reference[:1], kl=kl)
        out[rank] = KTO(beta=0.1).reference_point(x).item()
    finally:
        dist.destroy_process_group()


def test_reference_point_is_the_global_batch_mean(tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
    ratios = torch.cat([(r.policy - r.reference).sum(-1) for r in map(_kl_rows, ROWS)])
    expected = ratios.mean().clamp(min=0).item()
    per_rank = [(r.policy - r.reference).sum(-1).mean().item() for r in map(_kl_rows, ROWS)]
    assert abs(out[0] - expected) < 1e-12 and abs(out[1] - expected) < 1e-12
    assert min(abs(expected - v) for v in per_rank) > 1e-3  # the test can tell global from local


def test_reference_point_without_distributed_is_the_local_mean():
    kl = _kl_rows(0)
    x = ObjectiveInputs(policy=kl.policy[:1], mask=kl.mask[:1], reference=kl.reference[:1], kl=kl)
    assert abs(KTO().reference_point(x).item() - (kl.policy - kl.reference).sum(-1).mean().item()) < 1e-12
