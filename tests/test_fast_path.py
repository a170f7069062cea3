"""The fast path's pieces: fused AdamW by default, diagnostics only on logging steps, shared-token flags once."""

from __future__ import annotations

import lightning as L
import torch

import fpa.data.collate as collate
import fpa.module
from fpa.data.collate import Collator, shared_token_flags
from fpa.data.datamodule import TrajectoryDataModule
from fpa.models.char_tokenizer import build_char_tokenizer
from fpa.module import OfflineRLModule
from fpa.objectives.dpo import DPO
from fpa.optim import AdamW, fused_supported


def _pairs(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        a = torch.randint(5, 20, (6,), generator=g).tolist()
        b = a[:2] + torch.randint(5, 20, (3,), generator=g).tolist() + a[4:]
        out.append({"problem_id": str(i), "prompt": f"{i}+1=", "chosen": "".join(chr(97 + t % 26) for t in a),
                    "rejected": "".join(chr(97 + t % 26) for t in b)})
    return out


def test_fused_adamw_by_default_on_cpu_and_same_updates_as_the_loop():
    params = [torch.nn.Parameter(torch.randn(40, 30, dtype=torch.float64)) for _ in range(3)]
    assert fused_supported(params) and AdamW()(params).defaults["fused"] is True
    assert AdamW(fused=False)(params).defaults["fused"] is False
    assert not fused_supported([torch.nn.Parameter(torch.randn(2)), torch.nn.Parameter(torch.randn(2, device="meta"))])
    copies = {f: [torch.nn.Parameter(p.detach().clone()) for p in params] for f in (None, False)}
    opts = {f: AdamW(lr=1e-2, weight_decay=0.1, fused=f)(ps) for f, ps in copies.items()}
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, dtype=torch.float64, generator=g) for p in params]
        for f, ps in copies.items():
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
            opts[f].step()
    for a, b in zip(copies[None], copies[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)  # float64: the same update up to rounding
        assert not torch.equal(a, params[0])  # they moved


def test_shared_token_flags_of_a_known_pair():
    fa, fb = shared_token_flags([1, 2, 3, 4, 5], [1, 2, 9, 4, 5, 7])
    assert fa == [True, True, False, True, True] and fb == [True, True, False, True, True, False]


def test_shared_flags_computed_once_per_data_set_not_per_batch(monkeypatch):
    tok = build_char_tokenizer()
    dm = TrajectoryDataModule(tok, "pairs", examples=_pairs(6), batch_size=3, max_length=64)
    dm.setup()
    want = [shared_token_flags(e["chosen_ids"], e["rejected_ids"]) for e in dm.train_set]
    assert [(e["chosen_shared"], e["rejected_shared"]) for e in dm.train_set] == want

    def aligned_again(*_):
        raise AssertionError("a batch re-aligned a pair")

    monkeypatch.setattr(collate, "shared_token_flags", aligned_again)
    batch = next(iter(dm.train_dataloader()))
    n = batch["input_ids"].shape[0] // 2
    for row in range(2 * n):
        comp = batch["completion_mask"][row]
        flags = batch["shared_mask"][row][comp].tolist()
        assert flags in [w[0] for w in want] if row < n else flags in [w[1] for w in want]
    # examples without stored flags (another caller of the collator) still get them computed
    monkeypatch.setattr(collate, "shared_token_flags", shared_token_flags)
    raw = [{k: v for k, v in e.items() if not k.endswith("_shared")} for e in dm.train_set[:2]]
    assert torch.equal(Collator("pairs", tok.pad_token_id)(raw)["shared_mask"],
                       Collator("pairs", tok.pad_token_id)(dm.train_set[:2])["shared_mask"])


def test_diagnostics_only_on_logging_steps(tiny_path, monkeypatch, tmp_path):
    tok = build_char_tokenizer()
    dm = TrajectoryDataModule(tok, "pairs", examples=_pairs(8), batch_size=2, max_length=64)
    calls, real = [], fpa.module.batch_diagnostics
    monkeypatch.setattr(fpa.module, "batch_diagnostics", lambda *a, **k: calls.append(1) or real(*a, **k))
    module = OfflineRLModule(tiny_path, DPO(beta=0.1), reference_path=tiny_path, optimizer=AdamW(lr=1e-4))
    logged = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append(sorted(k for k in trainer.logged_metrics if k.startswith("train/")))

    trainer = L.Trainer(accelerator="cpu", max_steps=6, log_every_n_steps=3, logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Record()])
    trainer.fit(module, dm)
    assert len(calls) == 2  # steps 3 and 6 of 6
    assert "train/logps/chosen" in logged[2] and "train/loss" in logged[2] and "train/logps/chosen" in logged[5]
    assert module.logging_step()  # outside a fit: always
