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
    assert {r[2] for r in rows} == {"naive", "naive policy-only", "chunked c=32"}
    assert "Growth with length" in out


def test_logprob_memory_skips_what_would_not_fit(capsys):
    out = load("logprob_memory").main(["--vocab", "152064", "--lengths", "4096", "--variants", "naive",
                                       "--max-gb", "1"])
    assert "skipped naive at V=152064, N=4096: estimated peak" in out


def test_generation_throughput_quick(capsys):
    out = run_quick("generation_throughput", capsys)
    rows = table_rows(out, "hf backend generation throughput (tiny model)")
    assert [r[0] for r in rows] == ["1", "8"] and all(float(r[4].replace(",", "")) > 0 for r in rows)


def test_optimizer_step_quick(capsys):
    out = run_quick("optimizer_step", capsys)
    assert len(table_rows(out, "AdamW step on CPU")) == 3


def test_vs_trl_quick(capsys):
    pytest.importorskip("trl")
    out = run_quick("vs_trl", capsys)
    rows = table_rows(out, "This project's DPO vs TRL DPOTrainer: training throughput")
    assert [r[1] for r in rows] == ["this project (Lightning)", "TRL 1.16 DPOTrainer",
                                    "transformer body alone (policy fwd+bwd, reference fwd)"]
    assert float(rows[2][6].split()[0]) > 0  # the bound TRL's step / the body's time
    mem = table_rows(out, "This project's DPO vs TRL DPOTrainer: peak memory (RSS)")
    assert [r[1] for r in mem] == ["this project (Lightning)", "TRL 1.16 DPOTrainer"]


def test_gpu_lm_head_quick(capsys):
    out = run_quick("gpu_lm_head", capsys)
    rows = table_rows(out, load("gpu_lm_head").TITLE)
    assert [r[3] for r in rows] == ["chunked", "chunked_kernel"]
    assert all(float(r[4]) > 0 and float(r[8]) > 0 for r in rows)  # ms, TFLOP/s
    assert float(rows[1][10]) < 1e-4  # the kernel path's log-probs equal the chunked path's


def test_gpu_lm_head_reports_missing_kernels_as_skipped(monkeypatch, tmp_path, capsys):
    for name in ("liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.functional",
                 "cut_cross_entropy"):
        monkeypatch.setitem(sys.modules, name, None)
    out_file = tmp_path / "table.md"
    text = load("gpu_lm_head").main(["--quick", "--variants", "chunked", "liger", "cce", "--out", str(out_file)])
    assert [r[3] for r in table_rows(text, load("gpu_lm_head").TITLE)] == ["chunked"]
    assert "liger: skipped: liger-kernel is not installed" in text
    assert "cce: skipped: cut-cross-entropy is not installed" in text
    assert out_file.read_text() == text


def test_gpu_check_lm_head_script_quick(tmp_path):
    """scripts/gpu_check.sh lm-head --quick on CPU: no GPU, no Liger/CCE needed; the table lands in $OUT."""
    import os
    import subprocess

    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "GPU_CHECK_LIMIT_S": "200",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(BENCH.parent / "scripts" / "gpu_check.sh"), "lm-head", "--quick"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "== versions" in proc.stdout and "torch" in proc.stdout
    table = (tmp_path / "gpu_lm_head.md").read_text()
    assert [r[3] for r in table_rows(table, load("gpu_lm_head").TITLE)] == ["chunked", "chunked_kernel"]
    assert table in (tmp_path / "gpu_lm_head.log").read_text()


def test_vs_trl_varlen_quick_includes_the_packed_trainer(capsys):
    pytest.importorskip("trl")
    out = load("vs_trl").main(["--quick", "--configs", "varlen", "--no-memory"])
    rows = table_rows(out, "This project's DPO vs TRL DPOTrainer: training throughput")
    assert [r[1] for r in rows] == ["this project (Lightning)", "TRL 1.16 DPOTrainer",
                                    "this project, packed (data.pack=true)",
                                    "transformer body alone (policy fwd+bwd, reference fwd)"]
    assert all(float(r[5].replace(",", "")) > 0 for r in rows[:3])  # tokens/s
