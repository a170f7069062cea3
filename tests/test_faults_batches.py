"""One batch policy for every objective: the last partial batch of an epoch is dropped.

So KTO's KL collation (which needs >= 2 rows) never sees a final batch of one row, every step
has the same number of examples, and an epoch too small for a single batch is a clear error."""

from __future__ import annotations

import pytest

from fpa.data.collate import Collator
from fpa.resume import ShardedBatchSampler, make_loader


def _unpaired(n: int) -> list[dict]:
    return [{"prompt_ids": [1, 2 + i % 5], "completion_ids": [3, 4, 5][: 1 + i % 3], "label": i % 2}
            for i in range(n)]


@pytest.mark.parametrize("n,batch,ranks", [(7, 3, 1), (13, 4, 1), (11, 2, 2), (13, 2, 3), (9, 4, 2)])
def test_kto_batches_with_a_remainder_of_one_never_come_up_short(n, batch, ranks):
    assert n % (batch * ranks) == 1 or n % (batch * ranks) >= ranks  # a partial last batch exists
    collate = Collator("unpaired", pad_id=0, kl_rows=True)
    served = []
    for rank in range(ranks):
        loader = make_loader(_unpaired(n), collate, batch, seed=5, num_replicas=ranks, rank=rank)
        assert len(loader) == n // (batch * ranks)
        for epoch in range(3):
            loader.batch_sampler.sampler.set_epoch(epoch)
            sizes = [b["input_ids"].shape[0] for b in loader]  # the KL collator raised on a 1-row batch
            assert sizes == [batch] * len(loader), sizes
            assert all(b["kl_input_ids"].shape[0] == batch for b in loader)
            if epoch == 0:
                served += [i for b in loader.batch_sampler for i in b]
    # Across ranks an epoch is n // G full global batches, each example at most once.
    assert len(served) == len(set(served)) == (n // (batch * ranks)) * batch * ranks


def test_an_epoch_without_a_full_batch_is_a_clear_error():
    with pytest.raises(ValueError) as err:
        make_loader(_unpaired(3), Collator("unpaired", pad_id=0, kl_rows=True), batch_size=4, seed=0)
    msg = str(err.value)
    assert "3 training examples" in msg and "batch of 4" in msg and "\n" not in msg, msg
    with pytest.raises(ValueError, match=r"5 training examples.*batch of 6 \(3 per process × 2 processes\)"):
        ShardedBatchSampler(5, 3, num_replicas=2, rank=1)
    assert len(ShardedBatchSampler(4, 4)) == 1  # exactly one full batch is fine


def test_kto_trains_over_an_epoch_that_leaves_one_example(smoke_cfg, tmp_path):
    """12 unpaired examples in batches of 11: the old loader served a last batch of 1 row, and KTO's
    KL collation raised at the second step."""
    from fpa.config.parts import train_parts
    from fpa.stages.train import train_policy
    from fpa.testing import build_model, write_trajectories

    model = build_model(tmp_path / "model")
    trajectories = write_trajectories(tmp_path / "traj.jsonl", n_problems=3)  # 3 × 4 = 12 trajectories
    cfg = smoke_cfg("callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false", "objective=kto", "fpa.lam=0", "data.batch_size=11", "data.max_length=32", "train.max_steps=3")
    out = train_policy(train_parts(cfg), str(model), trajectories, tmp_path / "run", loggers=False)
    assert (out / "config.json").exists()
