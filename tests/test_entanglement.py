"""The gradient-entanglement probe: its numbers against an independent computation, the steps it logs
at, and that training is the same with it on or off."""

from __future__ import annotations

import pytest
import torch
import pandas as pd
from lightning.pytorch.loggers import CSVLogger
from transformers import AutoModelForCausalLM

from fpa.config.parts import train_parts
from fpa.entanglement import EntanglementProbe, entanglement
from fpa.stages.train import train_policy
from fpa.testing import build_model, write_trajectories


def _flat_grad(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten().double() for p in model.parameters() if p.grad is not None])


def test_entanglement_against_two_backward_passes_on_a_tiny_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0, 2])
    chosen = torch.tensor([True, False, True, True, False, False])

    def seq():
        return torch.log_softmax(model(x), -1).gather(1, y[:, None]).squeeze(1)

    s = seq()
    got = entanglement(s[chosen], s[~chosen], list(model.parameters()))
    g_w, g_l = _flat_grad(model, seq()[chosen].mean()), _flat_grad(model, seq()[~chosen].mean())
    cos = torch.nn.functional.cosine_similarity(g_w, g_l, dim=0)
    torch.testing.assert_close(got["cosine"], cos, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got["norm_chosen"], g_w.norm(), rtol=1e-12, atol=0)
    torch.testing.assert_close(got["norm_rejected"], g_l.norm(), rtol=1e-12, atol=0)
    torch.testing.assert_close(got["inner_over_chosen"], g_w @ g_l / (g_w @ g_w), rtol=1e-12, atol=0)
    assert abs(got["cosine"].item()) < 1 - 1e-6  # not a degenerate case


def test_probe_does_not_touch_grad_buffers():
    model = torch.nn.Linear(3, 2)
    s = torch.log_softmax(model(torch.randn(4, 3)), -1)[:, 0]
    entanglement(s[:2], s[2:], list(model.parameters()))
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("entanglement")
    return build_model(root / "model"), write_trajectories(root / "traj.jsonl", n_problems=8)


def _train(smoke_cfg, assets, run, every):
    model, trajectories = assets
    parts = train_parts(smoke_cfg("train.max_steps=4", "data.batch_size=4", "callbacks.eval.every_n_steps=0",
                                  "callbacks.eval.at_end=false", f"callbacks.entanglement.every_n_steps={every}",
                                  "callbacks.entanglement.n_examples=3"))
    out = train_policy(parts, str(model), trajectories, run, loggers=[CSVLogger(str(run), name="csv")])
    probe = next(cb for cb in parts.callbacks if isinstance(cb, EntanglementProbe))
    return out, probe


def test_probe_logs_at_its_steps_matches_an_independent_computation_and_leaves_training_alone(
        smoke_cfg, assets, tmp_path):
    out, probe = _train(smoke_cfg, assets, tmp_path / "on", every=2)
    assert [row["step"] for row in probe.history] == [0, 2, 4]
    logged = pd.concat([pd.read_csv(f) for f in (tmp_path / "on").glob("csv/*/metrics.csv")])
    logged = logged.dropna(subset=["entanglement/cosine"])
    assert logged["step"].tolist() == [0, 2, 4]
    assert logged["entanglement/cosine"].tolist() == pytest.approx([r["entanglement/cosine"] for r in probe.history])
    off, quiet = _train(smoke_cfg, assets, tmp_path / "off", every=0)
    assert quiet.history == []
    a = AutoModelForCausalLM.from_pretrained(out)
    b = AutoModelForCausalLM.from_pretrained(off)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # training unchanged

    # Independently: the saved policy is the one probed at step 4; score the probe with plain logits.
    p = probe.probe
    a.eval()
    mask = p["completion_mask"][:, 1:].bool()
    chosen = p["chosen"].bool()
    assert chosen.sum() == 3 and (~chosen).sum() == 3  # 3 pairs

    def seq():
        lg = a(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits[:, :-1]
        t = torch.log_softmax(lg, -1).gather(2, p["input_ids"][:, 1:, None]).squeeze(2)
        return (t * mask).sum(-1)

    g_w, g_l = _flat_grad(a, seq()[chosen].mean()), _flat_grad(a, seq()[~chosen].mean())
    last = probe.history[-1]
    assert last["entanglement/cosine"] == pytest.approx(torch.nn.functional.cosine_similarity(
        g_w, g_l, dim=0).item(), rel=1e-4, abs=1e-6)
    assert last["entanglement/norm_chosen"] == pytest.approx(g_w.norm().item(), rel=1e-4)
    assert last["entanglement/norm_rejected"] == pytest.approx(g_l.norm().item(), rel=1e-4)


def test_the_report_plots_the_entanglement_curve_when_logged(tmp_path):
    import pandas as pd

    from fpa.reporting.plots import all_plots
    from fpa.reporting.runs import Run

    def run(lam, cos):
        return Run(path=tmp_path, status="finished",
                   config={"objective": {"_target_": "fpa.objectives.dpo.DPO"}, "fpa": {"lam": lam}},
                   metrics=pd.DataFrame({"step": [0, 10, 20], "entanglement/cosine": cos}))

    plots = all_plots([run(0.0, [0.1, 0.3, 0.5]), run(1.0, [0.1, 0.2, 0.25])], tmp_path / "out")
    assert [p.name for p in plots] == ["entanglement_vs_step.png"] and plots[0].stat().st_size > 1000
