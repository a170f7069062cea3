"""The sampled token ids travel with each trajectory (schema version 2) and training scores them verbatim.

Fast tests use the tiny model and its char tokenizer; the real-tokenizer tests use SmolLM2-135M
(``smollm_dir``, skipped without the model package), where re-tokenising text can differ from the ids
the model sampled.
"""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from fpa.data.collate import Collator
from fpa.data.datamodule import TrajectoryDataModule, tokenize_example
from fpa.data.examples import BUILDERS
from fpa.data.records import SCHEMA_VERSION, TRAJECTORY_FEATURES, RecordError, load_trajectories
from fpa.data.shards import ShardDirectory
from fpa.generation.backends import HFBackend
from fpa.generation.hf import HFGenerator
from fpa.generation.trajectories import SamplingSettings, write_trajectory_set
from fpa.models.loading import load_model, load_tokenizer
from fpa.models.tiny import build_tiny_model
from fpa.prompting import PromptFormat
from fpa.tasks.arith import ArithTask


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny-ids")
    build_tiny_model(out, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
    return str(out)


@pytest.fixture(scope="module")
def tok(tiny):
    return load_tokenizer(tiny)


def _enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _check_sample_ids(s, tok, prompt, max_new_tokens):
    eos = tok.eos_token_id
    assert s.prompt_ids == _enc(tok, prompt)  # exactly as fed, left padding removed
    assert tok.decode(s.completion_ids, skip_special_tokens=True) == s.completion
    if s.finish_reason == "stop":
        assert s.completion_ids[-1] == eos and s.completion_ids.count(eos) == 1
        assert s.n_tokens == len(s.completion_ids) - 1
    else:
        assert eos not in s.completion_ids and len(s.completion_ids) == max_new_tokens == s.n_tokens


# ---- the tiny model: generator, records, shards --------------------------------------------------------------

def test_hf_generator_reports_the_ids_it_fed_and_sampled(tiny, tok):
    prompts = ["1+2=", "13+4=", "7+18+9="]  # different lengths: left padding in one batch
    gen = HFBackend.load(tiny, tok, batch_size=8, max_new_tokens=6, progress=False)
    samples = gen.sample(prompts, n=6, temperature=1.0, seed=1)
    for s in samples:
        _check_sample_ids(s, tok, prompts[s.prompt_index], 6)
    assert {s.finish_reason for s in samples} == {"stop", "length"}  # both kinds are checked


def test_shard_records_carry_the_ids_with_schema_version_2(tmp_path, tiny, tok):
    task = ArithTask(n_terms=2, max_operand=9)
    problems = task.problems("train", 4, seed=0)
    prompts = [PromptFormat()(p.question) for p in problems]
    settings = SamplingSettings(k=3, max_new_tokens=6, batch_size=4, seed=0, shard_size=2)
    write_trajectory_set(tmp_path / "set", problems=problems, prompts=prompts, task=task,
                         load_generator=lambda: HFBackend.load(tiny, tok, batch_size=4, max_new_tokens=6,
                                                               progress=False),
                         settings=settings, model_name=tiny, identity={"test": 1}, progress=False)
    assert json.loads((tmp_path / "set" / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION == 2
    records, _ = load_trajectories(tmp_path / "set", skip_invalid=True)  # empty completions (EOS first) skipped
    assert records
    for r in records:
        assert r["schema_version"] == 2 and r["prompt_ids"] == _enc(tok, r["prompt"])
        assert tok.decode(r["completion_ids"], skip_special_tokens=True) == r["completion"]
        assert (r["completion_ids"][-1] == tok.eos_token_id) == (r["finish_reason"] == "stop")
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "set"), split="train")
    assert ds.features["completion_ids"] == TRAJECTORY_FEATURES["completion_ids"]


# ---- (c) tokenize_example and the collator -------------------------------------------------------------------

def _rec(tok, pid, prompt, completion, reward, finish, ids=True):
    r = {"problem_id": pid, "prompt": prompt, "completion": completion, "reward": reward, "finish_reason": finish}
    if ids:
        r["prompt_ids"] = _enc(tok, prompt)
        r["completion_ids"] = _enc(tok, completion) + ([tok.eos_token_id] if finish == "stop" else [])
    return r


@pytest.mark.parametrize("ids", [True, False], ids=["stored-ids", "text-path"])
def test_eos_once_for_a_stopped_sample_none_for_a_length_sample(tok, ids):
    eos = tok.eos_token_id
    stopped = _rec(tok, "a", "1+2=", "3", 1.0, "stop", ids)
    cut = _rec(tok, "a", "1+2=", "4444444", 0.0, "length", ids)
    for kind in ("pairs", "unpaired", "groups", "correct"):
        examples = [tokenize_example(e, tok) for e in BUILDERS[kind]([stopped, cut])]
        comps = [c for e in examples for c in [e.get(k) for k in ("chosen_ids", "rejected_ids", "completion_ids")]
                 + e.get("completions_ids", []) if c is not None]
        n = 1 if kind == "correct" else 2  # correct-only keeps the stopped (right) sample
        assert sorted(comps, key=len) == [_enc(tok, "3") + [eos], _enc(tok, "4444444")][:n], kind
    example = tokenize_example(BUILDERS["pairs"]([stopped, cut])[0], tok)
    batch = Collator("pairs", tok.pad_token_id, shared_tokens=False)([example])
    p = len(_enc(tok, "1+2="))
    chosen_len, rejected_len = 1 + 1, 7  # "3" + EOS; the cut sample without one
    width = batch["input_ids"].shape[1]
    assert width == p + rejected_len
    ids0, mask0, attn0 = batch["input_ids"][0], batch["completion_mask"][0], batch["attention_mask"][0]
    assert ids0[p + chosen_len - 1] == eos and bool(mask0[p + chosen_len - 1])  # the EOS is scored
    assert mask0.tolist() == [False] * p + [True] * chosen_len + [False] * (width - p - chosen_len)  # padding is not
    assert attn0.tolist() == [1] * (p + chosen_len) + [0] * (width - p - chosen_len)
    assert batch["completion_mask"][1].tolist() == [False] * p + [True] * rejected_len
    assert eos not in batch["input_ids"][1].tolist()


def test_stored_ids_are_used_verbatim_over_the_text(tok):
    r = _rec(tok, "a", "1+2=", "3", 1.0, "stop")
    r["prompt_ids"], r["completion_ids"] = [5, 6, 7], [8, 9]  # not what the text tokenises to
    for kind in ("unpaired", "groups", "correct"):
        e = tokenize_example(BUILDERS[kind]([r])[0], tok)
        assert e["prompt_ids"] == [5, 6, 7]
        assert e.get("completion_ids", (e.get("completions_ids") or [None])[0]) == [8, 9]
        assert not {k for k in e if k.endswith("_eos") or k in ("prompt", "completion", "completions")}


def test_ids_outside_the_vocabulary_are_refused(tok):
    from fpa.guards import InputError

    r = _rec(tok, "a", "1+2=", "3", 1.0, "stop")
    r["completion_ids"] = [len(tok) + 5]
    with pytest.raises(InputError, match=f"token id {len(tok) + 5}.*another tokenizer"):
        TrajectoryDataModule(tok, "correct", trajectories=[r]).setup()


# ---- (d) version-1 sets and bad ids --------------------------------------------------------------------------

V1_FEATURES = datasets.Features({k: v for k, v in TRAJECTORY_FEATURES.items()
                                 if k not in ("prompt_ids", "completion_ids")})


def test_a_version_1_set_loads_and_trains_through_the_text_path(tmp_path, tiny, tok):
    rows = [{"problem_id": f"p{i}", "sample_index": s, "prompt": f"{i}+1=", "completion": c, "reward": r,
             "finish_reason": f, "n_tokens": len(c), "schema_version": 1}
            for i in range(3) for s, (c, r, f) in enumerate([(str(i + 1), 1.0, "stop"), ("99999", 0.0, "length")])]
    root = tmp_path / "v1"
    shards = ShardDirectory(root).open({"test": True}, 1)
    shards.manifest["schema_version"] = 1
    shards.write(0, rows, features=V1_FEATURES)
    shards.mark_complete()
    records, _ = load_trajectories(root)
    assert len(records) == 6 and all("completion_ids" not in r for r in records)
    dm = TrajectoryDataModule(tok, "pairs", trajectories=records, batch_size=3)
    dm.setup()
    eos = tok.eos_token_id
    for e in dm.train_set:
        assert e["chosen_ids"][-1] == eos and eos not in e["rejected_ids"]  # "length": no EOS appended
    batch = next(iter(dm.train_dataloader()))
    model = load_model(tiny)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    mask = batch["completion_mask"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[mask], batch["input_ids"][:, 1:][mask])
    nll.backward()
    assert torch.isfinite(nll)
    with pytest.raises(ValueError, match="schema version 1.*cannot resume"):  # never mixed with version-2 shards
        ShardDirectory(root).open({"test": True}, 1)


@pytest.mark.parametrize("field,value,problem", [
    ("completion_ids", [3, -1], "token 1 is -1"),
    ("completion_ids", [3, "4"], "token 1 is '4'"),
    ("prompt_ids", [1.5], "token 0 is 1.5"),
    ("prompt_ids", [True], "token 0 is True"),
    ("completion_ids", [], "empty"),
    ("prompt_ids", "1 2 3", "expected a list"),
    ("prompt_ids", None, "missing while 'completion_ids' is given"),
])
def test_bad_ids_give_a_record_error_naming_the_field(tmp_path, field, value, problem):
    row = {"problem_id": "p", "prompt": "1+1=", "completion": "2", "reward": 1.0, "schema_version": 2,
           "prompt_ids": [1, 2], "completion_ids": [3, 4], field: value}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"problem_id": "p", "prompt": "x", "completion": "y", "reward": 0.0}) + "\n"
                    + json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=f"bad.jsonl: record 1 \\(line 2\\): field '{field}': .*{problem}") as err:
        load_trajectories(path)
    assert err.value.field == field
    assert len(load_trajectories(path, skip_invalid=True)[0]) == 1


# ---- the real tokenizer and model (SmolLM2-135M) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm_tok(smollm_dir):
    return load_tokenizer(str(smollm_dir))


def test_real_tokenizer_training_ids_are_the_stored_ids(smollm_tok):
    """(a) Re-tokenising prompt and completion separately differs from the joint sequence, and a sampled
    split of a word is not what its text re-tokenises to; the stored ids reach the model unchanged."""
    tok = smollm_tok
    candidates = [("2+3 = ", "5"), ("Hello wor", "ld"), ("The capital of Fra", "nce is Paris")]
    found = [(p, c) for p, c in candidates if _enc(tok, p) + _enc(tok, c) != _enc(tok, p + c)]
    assert found, "no prompt/completion pair whose separate tokenisation differs from the joint one"
    prompt, completion = found[0]
    # as a model may sample it: the completion's first word split in two tokens
    head, tail = completion[:1], completion[1:]
    completion_ids = _enc(tok, head) + _enc(tok, tail) + [tok.eos_token_id]
    assert tok.decode(completion_ids, skip_special_tokens=True) == completion
    assert completion_ids[:-1] != _enc(tok, completion)  # re-tokenising the decoded text would change them
    record = {"problem_id": "p", "prompt": prompt, "completion": completion, "reward": 1.0, "finish_reason": "stop",
              "prompt_ids": _enc(tok, prompt), "completion_ids": completion_ids}
    text = tokenize_example(BUILDERS["correct"]([{**record, "prompt_ids": None, "completion_ids": None}])[0], tok)
    for kind in ("correct", "unpaired", "groups"):
        batch = Collator(kind, tok.pad_token_id)([tokenize_example(BUILDERS[kind]([record])[0], tok)])
        assert batch["input_ids"][0].tolist() == record["prompt_ids"] + completion_ids
        assert batch["completion_mask"][0].tolist() == [False] * len(record["prompt_ids"]) + [True] * len(
            completion_ids)
    assert text["prompt_ids"] + text["completion_ids"] != record["prompt_ids"] + completion_ids


def test_real_model_batched_left_padded_ids_match_batch_size_1(smollm_dir, smollm_tok):
    """(b) Greedy samples of prompts of different lengths: the same ids in a left-padded batch as alone."""
    tok = smollm_tok

    def chat(q):
        return tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)

    prompts = [chat("What is 2+2? Answer with one number."), "Once upon a time",
               chat("Write a long story about a dragon who loves numbers.")]
    assert len({len(_enc(tok, p)) for p in prompts}) == 3
    model = load_model(str(smollm_dir))
    alone = HFGenerator(model, tok, batch_size=1, max_new_tokens=16, progress=False).sample(prompts, temperature=0)
    batched = HFGenerator(model, tok, batch_size=3, max_new_tokens=16, progress=False).sample(prompts, temperature=0)
    assert [s.completion_ids for s in batched] == [s.completion_ids for s in alone]
    assert [s.prompt_ids for s in batched] == [_enc(tok, p) for p in prompts]
    for s in batched:
        _check_sample_ids(s, tok, prompts[s.prompt_index], 16)
    assert {s.finish_reason for s in batched} == {"stop", "length"}


def test_vllm_backend_passes_on_the_ids(monkeypatch, tok):
    """vLLM is not installed here: a stand-in engine returns what vLLM's outputs hold."""
    from types import SimpleNamespace

    from fpa.generation import vllm_backend

    fake_vllm = SimpleNamespace(SamplingParams=lambda **kw: kw)
    monkeypatch.setattr(vllm_backend, "_import_vllm", lambda: (fake_vllm, lambda prompt_token_ids: prompt_token_ids))
    eos = tok.eos_token_id
    a, b = _enc(tok, "12"), _enc(tok, "345")

    class Engine:
        def generate(self, prompts, params, use_tqdm=False):
            return [SimpleNamespace(prompt_token_ids=p, outputs=[
                SimpleNamespace(token_ids=tuple(a + [eos]), text="12", finish_reason="stop"),
                SimpleNamespace(token_ids=tuple(b), text="345", finish_reason="length")]) for p in prompts]

    gen = vllm_backend.VLLMGenerator(Engine(), tok, max_new_tokens=3, progress=False)
    stop, length = gen.sample(["1+2="], n=2)
    assert stop.prompt_ids == length.prompt_ids == _enc(tok, "1+2=")
    assert (stop.completion_ids, stop.finish_reason, stop.n_tokens) == (a + [eos], "stop", len(a))
    assert (length.completion_ids, length.finish_reason, length.n_tokens) == (b, "length", 3)
