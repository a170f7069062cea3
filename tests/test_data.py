"""Examples from trajectories (pairs, labels, groups), the DataModule's filters and shuffling, packing."""

from __future__ import annotations

import pytest
import torch

from fpa.data.datamodule import SeededShuffle, TrajectoryDataModule
from fpa.data.examples import build_correct, build_groups, build_pairs, build_unpaired
from fpa.data.packing import unpack, unpack_logprobs
from fpa.logprobs import chunked_token_logprobs, completion_logprobs
from fpa.models.char_tokenizer import build_char_tokenizer
from fpa.models.tiny import build_tiny_model


def traj(pid: str, completion: str, reward: float) -> dict:
    return {"problem_id": pid, "prompt": f"{pid}?\n", "completion": completion, "reward": reward}


# a: 2 right × 3 wrong; b: all right; c: 1 right × 1 wrong; d: all wrong
TRAJS = ([traj("a", f"r{i}", 1.0) for i in range(2)] + [traj("a", f"w{i}", 0.0) for i in range(3)]
         + [traj("b", f"r{i}", 1.0) for i in range(3)] + [traj("c", "r", 1.0), traj("c", "w", 0.0)]
         + [traj("d", f"w{i}", 0.0) for i in range(2)])


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.mark.parametrize("strategy,cap,expected", [("all", 4, {"a": 6, "c": 1}), ("one", 4, {"a": 1, "c": 1}),
                                                   ("cap", 4, {"a": 4, "c": 1}), ("cap", 10, {"a": 6, "c": 1})])
def test_pair_counts(strategy, cap, expected):
    pairs = build_pairs(TRAJS, strategy=strategy, max_per_problem=cap, seed=3)
    counts = {pid: sum(p["problem_id"] == pid for p in pairs) for pid in "abcd"}
    assert counts == {"a": 0, "b": 0, "c": 0, "d": 0, **expected}
    assert all(p["chosen"].startswith("r") and p["rejected"].startswith("w") for p in pairs)
    assert len({(p["chosen"], p["rejected"], p["problem_id"]) for p in pairs}) == len(pairs)  # no repeats
    assert pairs == build_pairs(TRAJS, strategy=strategy, max_per_problem=cap, seed=3)  # same seed, same pairs


def test_pairing_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="all | one | cap"):
        build_pairs(TRAJS, strategy="best")


def test_unpaired_groups_and_correct_counts():
    labels = build_unpaired(TRAJS)
    assert len(labels) == len(TRAJS) and sum(e["label"] for e in labels) == 6
    groups = build_groups(TRAJS)
    assert [g["problem_id"] for g in groups] == ["a", "b", "c", "d"]
    assert [len(g["completions"]) for g in groups] == [5, 3, 2, 2]
    assert groups[0]["rewards"] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert [g["problem_id"] for g in build_groups(TRAJS, only_mixed=True)] == ["a", "c"]
    assert len(build_correct(TRAJS)) == 6


def test_length_filter_drop_and_truncate(tok):
    trajs = [traj("a", "x" * 5, 1.0), traj("a", "y" * 30, 0.0), traj("b", "z" * 3, 1.0)]
    drop = TrajectoryDataModule(tok, "unpaired", trajectories=trajs, max_length=12, overlong="drop")
    drop.setup()
    assert drop.n_dropped == 1 and len(drop.train_set) == 2
    cut = TrajectoryDataModule(tok, "unpaired", trajectories=trajs, max_length=12, overlong="truncate")
    cut.setup()
    assert cut.n_dropped == 0
    assert all(len(e["prompt_ids"]) + len(e["completion_ids"]) <= 12 for e in cut.train_set)
    long = next(e for e in cut.train_set if len(e["completion_ids"]) == 12 - 3)
    assert tok.eos_token_id not in long["completion_ids"]  # a cut completion does not teach stopping
    with pytest.raises(ValueError, match="drop | truncate"):
        TrajectoryDataModule(tok, "unpaired", trajectories=trajs, overlong="wrap")


def test_shuffle_depends_only_on_seed_and_epoch():
    a, b = SeededShuffle(50, seed=7), SeededShuffle(50, seed=7)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(3)
    b.set_epoch(1)  # resuming in epoch 1 gives epoch 1's order, whatever came before
    assert list(b) == list(a)
    assert list(SeededShuffle(50, seed=8)) != first


def test_datamodule_batches_are_reproducible(tok):
    def batches():
        dm = TrajectoryDataModule(tok, "pairs", trajectories=TRAJS, batch_size=2, pairing="all", seed=5)
        dm.setup()
        return [b["input_ids"].tolist() for b in dm.train_dataloader()]

    first = batches()
    assert len(first) == 4 and first == batches()


def _batch(tok, kind="pairs", trajs=TRAJS):
    dm = TrajectoryDataModule(tok, kind, trajectories=trajs, batch_size=64, pairing="all", pack=True)
    dm.setup()
    return dm.collate(dm.train_set)


def test_packed_layout(tok):
    batch = _batch(tok, "unpaired", TRAJS[:3])
    lengths = batch["attention_mask"].sum(1).tolist()
    assert batch["packed_input_ids"].shape == (1, sum(lengths))
    pos = batch["packed_position_ids"][0].tolist()
    assert pos == [i for n in lengths for i in range(n)]
    # the same tokens are scored in both layouts, in the same order
    values = torch.arange(sum(lengths) - 1, dtype=torch.float)[None]
    out = unpack(values, batch)
    padded_ids = batch["input_ids"][:, 1:][batch["completion_mask"][:, 1:] & batch["attention_mask"][:, 1:].bool()]
    packed_mask = batch["packed_completion_mask"][:, 1:]
    assert torch.equal(batch["packed_input_ids"][:, 1:][packed_mask], padded_ids)
    assert out.shape == batch["input_ids"][:, 1:].shape
    assert torch.equal(out[out != 0], values[packed_mask][values[packed_mask] != 0])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logprobs_equal_padded(tmp_path, tok, attn):
    from transformers import AutoModelForCausalLM

    build_tiny_model(tmp_path, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_positions=64)
    policy = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=attn, dtype=torch.float64)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=attn, dtype=torch.float64)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _batch(tok)
    padded = completion_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                 reference=reference, lam=0.5)
    packed = completion_logprobs(policy, batch["packed_input_ids"], batch["packed_attention_mask"],
                                 batch["packed_completion_mask"], reference=reference, lam=0.5,
                                 position_ids=batch["packed_position_ids"])
    packed = unpack_logprobs(packed, batch)
    assert torch.equal(packed.mask, padded.mask)
    for field in ("policy", "reference", "future"):
        torch.testing.assert_close(getattr(packed, field), getattr(padded, field), rtol=0, atol=1e-7)
    # gradient reaches the policy through the packed row just as through the padded rows
    packed.policy.sum().backward()
    assert all(p.grad is not None for p in policy.parameters())


def test_packed_rows_leak_through_a_2d_mask(tmp_path, tok):
    """Why the packed row must go in without attention_mask: an all-ones 2D mask attends across sequences."""
    from transformers import AutoModelForCausalLM

    build_tiny_model(tmp_path, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    batch = _batch(tok, "unpaired", TRAJS[:2])
    ids, pos = batch["packed_input_ids"], batch["packed_position_ids"]
    weight = model.get_output_embeddings().weight
    mask = batch["packed_completion_mask"][:, 1:]

    def scores(**kw):
        hidden = model.base_model(input_ids=ids, position_ids=pos, use_cache=False, **kw).last_hidden_state
        return chunked_token_logprobs(hidden[:, :-1][mask], weight, ids[:, 1:][mask])[0]

    right = unpack(torch.zeros(mask.shape, dtype=torch.float64).masked_scatter(mask, scores()), batch)
    padded = completion_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    torch.testing.assert_close(right, padded.policy.detach())
    assert not torch.allclose(scores(attention_mask=batch["packed_attention_mask"]), scores())


@pytest.mark.parametrize("n,batch,ranks", [(96, 32, 2), (11, 4, 2), (10, 4, 3), (9, 4, 2)])
def test_split_batch_sampler_splits_the_one_process_batches(n: int, batch: int, ranks: int) -> None:
    from torch.utils.data import BatchSampler

    from fpa.data.datamodule import SeededShuffle, SplitBatchSampler

    one = list(BatchSampler(SeededShuffle(n, 3), batch, drop_last=False))
    parts = [SplitBatchSampler(n, batch, 3, ranks, r) for r in range(ranks)]
    assert len({len(p) for p in parts}) == 1  # every rank takes the same number of steps
    joined = [sum(step, []) for step in zip(*(list(p) for p in parts))]
    assert joined == one[:len(joined)]
    assert len(joined) == len(one) - int(n % batch and n % batch < ranks)  # a last batch too small to split: dropped
    for step in zip(*(list(p) for p in parts)):
        assert max(map(len, step)) - min(map(len, step)) <= 1 and min(map(len, step)) >= 1
