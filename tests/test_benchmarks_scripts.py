"""Each benchmark script (benchmarks/) runs at toy sizes with ``--quick`` and prints its table.

Not timed tests: they only keep the scripts from rotting. Each script's ``main`` runs in this
process (the libraries are imported once for the whole suite) and must print its markdown table.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"fpa_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_quick(name: str, capsys) -> str:
    returned = load(name).main(["--quick"])
    printed = capsys.readouterr().out
    titles = [line for line in returned.splitlines() if line.startswith("## ")]
    assert titles and all(t in printed for t in titles)
    return printed


def table_rows(text: str, title: str) -> list[list[str]]:
    """The data rows of the markdown table under ``## title`` (header and rule dropped)."""
    lines: list[str] = []
    for line in text.split(f"## {title}", 1)[1].splitlines()[1:]:
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]


def test_fpa_overhead_quick(capsys):
    out = run_quick("fpa_overhead", capsys)
    rows = table_rows(out, "FPA-DPO vs DPO: step time (median over interleaved rounds)")
    assert {r[1] for r in rows} >= {"DPO (λ=0)", "FPA-DPO (λ=1)"}
    assert all(float(r[2].replace(",", "")) > 0 for r in rows if r[2])
    assert table_rows(out, "FPA-DPO vs DPO: peak memory (RSS)")


def test_logprob_memory_quick(capsys):
    out = run_quick("logprob_memory", capsys)
    rows = table_rows(out, "Log-probs, forward + backward: chunked vs naive")
    assert {r[2] for r in rows} == {"naive", "chunked c=32", "lowmem (patch)"}
    assert "Growth with length" in out


def test_logprob_memory_skips_what_would_not_fit(capsys):
    out = load("logprob_memory").main(["--vocab", "152064", "--lengths", "4096", "--variants", "naive",
                                       "--max-gb", "1"])
    assert "skipped naive at V=152064, N=4096: estimated peak" in out


def test_generation_throughput_quick(capsys):
    out = run_quick("generation_throughput", capsys)
    rows = table_rows(out, "hf backend generation throughput (tiny)")
    assert [(r[0], r[1]) for r in rows] == [("1", "baseline"), ("1", "new"), ("8", "baseline"), ("8", "new")]
    assert all(float(r[6].replace(",", "")) > 0 for r in rows)
    assert [r[10] for r in rows if r[1] == "new"] == ["yes", "yes"]  # the decode loop samples what generate did


def test_optimizer_step_quick(capsys):
    out = run_quick("optimizer_step", capsys)
    assert len(table_rows(out, "AdamW step on CPU")) == 3


def test_vs_trl_quick(capsys):
    pytest.importorskip("trl")
    out = run_quick("vs_trl", capsys)
    rows = table_rows(out, "This project's DPO vs TRL DPOTrainer: training throughput")
    assert [r[1] for r in rows] == ["this project (Lightning)", "TRL 1.16 DPOTrainer"]
    assert table_rows(out, "This project's DPO vs TRL DPOTrainer: peak memory (RSS)")


def test_lowmem_patch_matches_the_project_log_probs():
    """The proposed implementation (benchmarks/patches) gives the same values and gradients."""
    import torch

    from fpa.logprobs import chunked_token_logprobs

    load("_common")
    from patches import logprobs_lowmem as P

    torch.manual_seed(0)
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    y, rh, rw = torch.randint(0, 50, (37,)), torch.randn(37, 8, dtype=torch.float64), torch.randn(50, 8,
                                                                                                 dtype=torch.float64)
    saved = P.CHUNK_ELEMENTS
    P.CHUNK_ELEMENTS = 50 * 5  # 5-row chunks: several chunks, a ragged last one
    try:
        outs = []
        for fn in (chunked_token_logprobs, P.chunked_token_logprobs):
            pol, ref, fut = fn(h, w, y, rh, rw, lam=0.7, chunk_size=1024)
            outs.append((pol, ref, fut, *torch.autograd.grad(pol.sum() * 1.3, (h, w))))
    finally:
        P.CHUNK_ELEMENTS = saved
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
