"""train.precompute_reference: the reference's token log-probs computed once, cached, served with the batch."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from testconfig import CONF, compose_config
from fpa.config.parts import train_parts
from fpa.data.datamodule import TrajectoryDataModule
from fpa.data.reference import KEY, enabled
from fpa.fpa import FuturePolicy
from fpa.guards import ConfigError
from fpa.logprobs import completion_logprobs
from fpa.models.loading import load_model, load_tokenizer
from fpa.module import OfflineRLModule
from fpa.objectives import DPO, IPO, KTO, RPO, SFT, OfflinePG, SimPER
from fpa.stages import reference_logprobs as stage
from fpa.testing import build_model, write_trajectories


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref-precompute")
    # Two models: the policy starts away from the reference, as after some training, so the ratios are not 0.
    ref = build_model(root / "reference", seed=0)
    pol = build_model(root / "policy", seed=1)
    records = [json.loads(line) for line in write_trajectories(root / "traj.jsonl", n_problems=8).read_text()
               .splitlines()]
    return ref, pol, records


def examples_for(kind: str, path, records, pack: bool = False) -> TrajectoryDataModule:
    dm = TrajectoryDataModule(load_tokenizer(str(path)), kind, trajectories=records, batch_size=4, max_length=64,
                              pack=pack)
    dm.setup("fit")
    return dm


def in_step_and_precomputed(objective, assets, cache, pack=False, n=4, fpa=None):
    ref, pol, records = assets
    dm = examples_for(objective.data, ref, records, pack)
    plain = dm.collate(dm.train_set[:n])  # before the examples carry their reference log-probs
    stage.precompute(str(ref), dm.train_set, dm.kind, dm.tokenizer.pad_token_id, cache)
    served = dm.collate(dm.train_set[:n])
    assert KEY in served and KEY not in plain
    torch.manual_seed(0)
    fpa = fpa or FuturePolicy(lam=0.0)
    a = OfflineRLModule(str(pol), objective, fpa, reference_path=str(ref), chunk_size=7)
    b = OfflineRLModule(str(pol), objective, fpa, reference_path=str(ref), chunk_size=7, precomputed_reference=True)
    assert a.reference is not None and b.reference is None  # the precomputed module loads no reference model
    return a, b, plain, served


def step(module, batch):
    x = module.objective_inputs(batch)
    out = module.fpa(module.objective, x)
    module.policy.zero_grad(set_to_none=True)
    out.loss.backward()
    return x, out.loss.detach(), {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}


def shipped_objective(name: str, **overrides):
    from omegaconf import OmegaConf

    from fpa.config.build import build

    node = OmegaConf.load(CONF / "objective" / f"{name}.yaml")
    for key, value in overrides.items():
        if key in node:
            node[key] = value
    return build(node, "objective")


# Every shipped objective that declares reference_on_served_rows (a new one that opts in is tested too), with
# β = 0.5: further from the reference-free case (GRPO reads the reference only with β > 0).
DECLARED = sorted(p.stem for p in (CONF / "objective").glob("*.yaml")
                  if shipped_objective(p.stem).reference_on_served_rows)
PRECOMPUTABLE = [n for n in DECLARED if enabled("auto", shipped_objective(n, beta=0.5), FuturePolicy(lam=0.0))]


def test_the_shipped_objectives_that_declare_it():
    assert DECLARED == ["dpo", "grpo", "ipo", "offline_pg", "rpo", "simper"]
    assert PRECOMPUTABLE == ["dpo", "grpo", "ipo", "offline_pg", "rpo"]  # SimPER reads none without the guard


@pytest.mark.parametrize("name,pack,guard", [(n, False, None) for n in PRECOMPUTABLE]
                         + [("dpo", True, None), ("offline_pg", True, None), ("dpo", False, "future"),
                            ("simper", False, "future")])
def test_a_step_with_the_precomputed_reference_equals_the_in_step_one(name, pack, guard, assets, tmp_path):
    objective = shipped_objective(name, beta=0.5)
    a, b, plain, served = in_step_and_precomputed(objective, assets, tmp_path / "cache", pack,
                                                  fpa=FuturePolicy(lam=0.0, guard=guard))
    xa, loss_a, grads_a = step(a, plain)
    xb, loss_b, grads_b = step(b, served)
    scored = xa.mask
    assert torch.equal(xb.mask, scored)
    assert (xa.reference - xb.reference).abs().max() < 1e-5  # the same numbers, up to batch-composition rounding
    assert not torch.equal(xa.reference, xa.policy.detach())  # the test can tell reference from policy
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], rtol=1e-4, atol=1e-6), name
    assert loss_a.abs() > 1e-4  # a loss that means something


def test_with_lora_the_precomputed_reference_is_the_base_model(assets, tmp_path):
    """LoRA's in-step reference is the policy with its adapter disabled: the base, which the precompute scores."""
    from fpa.models.lora import LoraSettings

    ref, _, records = assets
    dm = examples_for("pairs", ref, records)
    plain = dm.collate(dm.train_set[:4])
    stage.precompute(str(ref), dm.train_set, "pairs", dm.tokenizer.pad_token_id, tmp_path / "cache")
    served = dm.collate(dm.train_set[:4])
    lora = LoraSettings(r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))
    modules = [OfflineRLModule(str(ref), DPO(beta=0.5), FuturePolicy(lam=0.0), lora=lora,
                               precomputed_reference=pre) for pre in (False, True)]
    for m in modules:  # the same adapters in both, nonzero so that the policy is not the base
        g = torch.Generator().manual_seed(3)
        for name, p in sorted(m.policy.named_parameters()):
            if "lora_" in name:
                p.data.copy_(0.05 * torch.randn(p.shape, generator=g))
    xa, loss_a, grads_a = step(modules[0], plain)
    xb, loss_b, grads_b = step(modules[1], served)
    assert (xa.reference - xb.reference).abs().max() < 1e-5
    assert not torch.allclose(xa.reference, xa.policy.detach(), atol=1e-3)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and all("lora" in n for n in grads_a)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], rtol=1e-4, atol=1e-6), name


def test_a_wrong_reference_would_be_caught(assets, tmp_path):
    """The equality above fails when the served values are off: the policy's own log-probs as 'reference'."""
    a, b, plain, served = in_step_and_precomputed(DPO(beta=0.5), assets, tmp_path / "cache")
    _, loss_a, grads_a = step(a, plain)
    wrong = dict(served, **{KEY: a.objective_inputs(plain).policy.detach()})
    _, loss_b, grads_b = step(b, wrong)
    assert not torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)


def test_the_stored_values_are_the_in_step_reference_forward_exactly_in_float64(assets):
    ref, _, records = assets
    dm = examples_for("pairs", ref, records)
    model = load_model(str(ref)).double()
    examples = dm.train_set[:4]
    values, offsets = stage.score(model, examples, "pairs", dm.tokenizer.pad_token_id, chunk_size=5)
    for k, ex in enumerate(examples):
        ex[KEY] = values[offsets[k]:offsets[k + 1]]
    batch = dm.collate(examples)
    lp = completion_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                             reference=model, chunk_size=5)
    assert batch[KEY].dtype == torch.float64
    assert torch.equal(batch[KEY], lp.reference)  # one batch, the same rows: bit for bit


@pytest.mark.parametrize("kind", ["pairs", "groups", "unpaired", "correct"])
def test_every_example_kind_is_served_back_in_row_order(kind, assets):
    """Each row gets its own example's values, whatever the batch: compare with a per-example scoring."""
    ref, _, records = assets
    dm = examples_for(kind, ref, records)
    model = load_model(str(ref))
    examples = dm.train_set[:5]
    values, offsets = stage.score(model, examples, kind, dm.tokenizer.pad_token_id, token_budget=1)  # one per batch
    for k, ex in enumerate(examples):
        ex[KEY] = values[offsets[k]:offsets[k + 1]]
    batch = dm.collate(examples[::-1])
    lp = completion_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                             reference=model)
    assert torch.allclose(batch[KEY], lp.reference, atol=1e-5)
    assert ((batch[KEY] != 0) == lp.mask).all()


def test_the_entry_is_reused_and_keyed_by_reference_and_rows(assets, tmp_path, monkeypatch):
    ref, pol, records = assets
    cache = tmp_path / "cache"
    dm = examples_for("pairs", ref, records)
    first, cached = stage.precompute(str(ref), dm.train_set, "pairs", dm.tokenizer.pad_token_id, cache)
    assert not cached and (first / stage.FILE).exists() and (first / "stage.json").exists()
    stored = [ex[KEY].clone() for ex in dm.train_set]

    def no_model(*a, **k):
        raise AssertionError("a cached entry must not load the reference again")

    monkeypatch.setattr("fpa.models.loading.load_model", no_model)
    again = examples_for("pairs", ref, records)  # a resumed run: fresh examples, the same rows
    second, cached = stage.precompute(str(ref), again.train_set, "pairs", again.tokenizer.pad_token_id, cache)
    assert cached and second == first
    assert all(torch.equal(ex[KEY], s) for ex, s in zip(again.train_set, stored))
    monkeypatch.undo()
    other_ref, _ = stage.precompute(str(pol), examples_for("pairs", ref, records).train_set, "pairs",
                                    dm.tokenizer.pad_token_id, cache)
    fewer = examples_for("pairs", ref, records[:16]).train_set
    other_rows, _ = stage.precompute(str(ref), fewer, "pairs", dm.tokenizer.pad_token_id, cache)
    assert len({first, other_ref, other_rows}) == 3


def test_a_wrong_entry_is_refused(assets, tmp_path):
    from safetensors.torch import load_file, save_file

    from fpa.stages.cache import CorruptEntryError

    ref, _, records = assets
    dm = examples_for("pairs", ref, records)
    entry, _ = stage.precompute(str(ref), dm.train_set, "pairs", dm.tokenizer.pad_token_id, tmp_path / "cache")
    save_file(load_file(str(entry / stage.FILE)), str(entry / stage.FILE), metadata={"rows": "another set"})
    with pytest.raises(CorruptEntryError, match="made for other examples"):
        stage.precompute(str(ref), dm.train_set, "pairs", dm.tokenizer.pad_token_id, tmp_path / "cache")
    values, offsets = stage.score(load_model(str(ref)), dm.train_set, "pairs", dm.tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="does not belong to these examples"):
        stage.attach(dm.train_set[:-1], values, offsets)
    for k, ex in enumerate(dm.train_set):
        ex[KEY] = values[offsets[k]:offsets[k + 1] - 1]  # one value short per example
    with pytest.raises(ValueError, match="does not belong to these examples"):
        dm.collate(dm.train_set[:2])


def test_auto_is_on_exactly_where_the_reference_can_be_precomputed():
    off, on = FuturePolicy(lam=0.0), FuturePolicy(lam=1.0)
    for objective in (DPO(), IPO(), RPO(), OfflinePG()):
        assert enabled("auto", objective, off) and not enabled("auto", objective, on)
    for objective in (KTO(), SFT(), SimPER()):
        assert not enabled("auto", objective, off)
    guarded = FuturePolicy(lam=0.0, guard="future")  # the guard reads the served pairs' reference log-probs
    assert enabled("auto", SimPER(), guarded) and enabled("auto", DPO(), guarded)
    assert not enabled("auto", KTO(), guarded)
    assert not enabled(False, DPO(), off)


@pytest.mark.parametrize("overrides,why", [
    (["fpa.lam=1"], "FPA (fpa.lam=1) needs the reference's full logits"),
    (["objective=kto", "fpa.lam=0"], "objective KTO reads the reference on mismatched KL rows"),
    (["objective=simper", "fpa.lam=0"], "objective SimPER does not read a reference"),
])
def test_true_where_not_allowed_is_one_clear_line(overrides, why):
    with pytest.raises(ConfigError) as err:
        train_parts(compose_config("train.precompute_reference=true", *overrides))
    (line,) = err.value.problems
    assert line.startswith(f"train.precompute_reference: true, but {why}") and "\n" not in line


def test_the_module_refuses_it_with_fpa(assets):
    ref, _, _ = assets
    with pytest.raises(ValueError, match="precomputed_reference: FPA"):
        OfflineRLModule(str(ref), DPO(), FuturePolicy(lam=1.0), precomputed_reference=True)


class Killed(Exception):
    pass


class Steps(L.Callback):
    """Each step's loss, and whether the module holds a reference model; ``kill_at``: stop before that step."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.loss, self.reference_loaded = kill_at, {}, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.reference_loaded = pl_module.reference is not None
        if self.kill_at is not None and trainer.global_step == self.kill_at:
            raise Killed(f"killed before step {trainer.global_step}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss[trainer.global_step - 1] = outputs["loss"].detach().clone()


def test_training_uses_the_cached_reference_and_resumes_onto_it(assets, smoke_cfg, tmp_path, capsys):
    """DPO (λ=0), auto: no reference model; a killed run resumes onto the same entry and reproduces the
    uninterrupted run exactly; the in-step reference run gives the same losses up to rounding."""
    from fpa.stages.train import train_policy

    ref, _, _ = assets
    traj = write_trajectories(tmp_path / "traj.jsonl", n_problems=4)
    cache = tmp_path / "cache"

    def run(run_dir, steps, *extra):
        cfg = smoke_cfg("fpa.lam=0", "callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false",
                        "data.batch_size=4", "data.max_length=32", "train.max_steps=4",
                        "callbacks.checkpoint.every_n_train_steps=2", *extra, cache=cache)
        return train_policy(train_parts(cfg), str(ref), traj, tmp_path / run_dir, [], callbacks=[steps])

    full = Steps()
    run("full", full)
    assert not full.reference_loaded and "computed once into" in capsys.readouterr().out
    first = Steps(kill_at=3)
    with pytest.raises(Killed):
        run("killed", first)
    assert "reused from" in capsys.readouterr().out
    second = Steps()
    run("killed", second)
    assert "reused from" in capsys.readouterr().out and sorted(second.loss) == [2, 3]
    for s, loss in {**first.loss, **second.loss}.items():
        assert torch.equal(loss, full.loss[s]), s
    in_step = Steps()
    run("in-step", in_step, "train.precompute_reference=false")
    assert in_step.reference_loaded and "reference log-probs" not in capsys.readouterr().out
    for s, loss in in_step.loss.items():
        assert torch.allclose(loss, full.loss[s], rtol=1e-5, atol=1e-6), (s, loss, full.loss[s])
    assert len(list((cache / "reference_logprobs").glob("*/stage.json"))) == 1


def test_the_benchmark_script_runs_at_toy_sizes(capsys):
    """benchmarks/ref_precompute.py --quick (kept here rather than in test_benchmarks_scripts.py)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("fpa_bench_ref_precompute", bench / "ref_precompute.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = module.main(["--quick"])
    finally:
        sys.path.remove(str(bench))
    printed = capsys.readouterr().out
    for text in ("DPO (precomputed reference) |", "FPA-DPO (λ=1) / DPO (precomputed reference)",
                 "FPA-DPO (λ=1) / DPO (reference forward)"):
        assert text in out and text in printed, text
