"""Configs are checked before any model loads: every shipped preset passes, and each kind of
mistake gives one clear line."""

from __future__ import annotations

import pytest

from fpa.cli.validate import main as validate_main
from fpa.guards import ConfigError
from fpa.validation import check_config, compose, fpa_changes_nothing, validate_config, validate_presets


def test_every_preset_and_experiment_config_validates():
    results = validate_presets()
    models = {o.split("=", 1)[1] for _, ov, _ in results for o in ov if o.startswith("model=")}
    assert {"tiny", "qwen2.5-math-1.5b", "qwen2.5-math-7b", "llama-3.2-3b-instruct", "deepseek-math-7b"} <= models
    trainers = {o.split("=", 1)[1] for _, ov, _ in results for o in ov if o.startswith("trainer=")}
    assert {"cpu", "gpu", "ddp", "fsdp"} <= trainers
    bad = [(name, ov, problems) for name, ov, problems in results if problems]
    assert not bad, bad


def test_real_model_presets_are_complete():
    for name in ("qwen2.5-math-1.5b", "qwen2.5-math-7b", "llama-3.2-3b-instruct", "deepseek-math-7b"):
        m = compose("train", [f"model={name}"]).model
        assert "/" in m.name_or_path and m.dtype == "bfloat16" and m.warm_start is False
        assert m.trust_remote_code is False and m.prompt.use_chat_template is True
        assert m.max_length <= m.arch.max_position_embeddings and m.max_new_tokens > 0
        assert "\\boxed{}" in (m.prompt.template.format(question="q") + (m.prompt.system or ""))


@pytest.mark.parametrize("overrides,expected", [
    (["objective=nope"], "objective=nope: no such config (conf/objective has: dpo"),
    (["objective._target_=fpa.objectives.nope.Nope"], "objective: unknown objective 'fpa.objectives.nope.Nope'"),
    (["objective=dpo", "objective.beta=0"], "objective.beta: must be > 0, got 0"),
    (["fpa.lam=-0.5"], "fpa.lam: λ must be >= 0 (0 is the base objective), got -0.5"),
    (["fpa.apply_to=left"], "fpa.apply_to: must be one of both | rejected | chosen, got 'left'"),
    (["objective=sft", "fpa.lam=1.0"], "fpa: λ=1.0 with objective SFT does nothing"),
    (["objective=rft", "fpa.lam=2"], "fpa: λ=2 with objective SFT does nothing"),
    (["task=gsm8k", "task.path=/no/such/gsm8k.jsonl"], "task.path: data file /no/such/gsm8k.jsonl does not exist"),
    (["model.name_or_path=/no/such/model"], "model.name_or_path: model directory /no/such/model does not exist"),
    (["++train.resume=/no/such/last.ckpt"], "train.resume: checkpoint /no/such/last.ckpt does not exist"),
    (["model.dtype=fp8"], "model.dtype: must be one of float32 | bfloat16 | float16 | auto, got 'fp8'"),
    (["model.prompt.template=hello"], "model.prompt.template: must contain {question}"),
    (["+model.prompt.style=chat"], "model.prompt: unknown field(s) style"),
    (["trainer.precision=bf17"], "trainer.precision: Precision 'bf17' is invalid"),
    (["+trainer.gpus=2"], "trainer: unknown option(s) gpus"),
    (["data.batch_size=6", "++train.micro_batch_size=4"], "train.micro_batch_size: 4 does not divide data.batch_size=6"),
    (["model=qwen2.5-math-1.5b", "data.max_length=8192"], "data.max_length: 8192 exceeds the model's 4096 positions"),
    (["train.lr=-1"], "train.lr: must be > 0, got -1"),
])
def test_bad_configs_give_one_clear_line(overrides, expected):
    try:
        problems = validate_config(compose("train", overrides))
    except ConfigError as e:
        problems = e.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]
    assert "\n" not in problems[0]


def test_simper_with_fpa_is_allowed_sft_is_not():
    from fpa.objectives import DPO, KTO, SFT, OfflinePG, SimPER

    assert fpa_changes_nothing(SFT()) and not fpa_changes_nothing(SimPER())
    assert not any(fpa_changes_nothing(o) for o in (DPO(), KTO(), OfflinePG()))


def test_train_stage_checks_before_loading_a_model(smoke_cfg, tmp_path, monkeypatch):
    from fpa.stages.train import train_policy

    monkeypatch.setattr("fpa.module.load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr("fpa.stages.train.load_tokenizer", lambda *a, **k: pytest.fail("a tokenizer was loaded"))
    with pytest.raises(ConfigError, match="fpa.lam"):
        train_policy(smoke_cfg("fpa.lam=-1"), "unused", tmp_path / "t.jsonl", tmp_path, [])
    with pytest.raises(ConfigError):
        check_config(smoke_cfg("objective=sft", "fpa.lam=1"))


def test_validate_command(capsys):
    assert validate_main(["objective=kto", "fpa.lam=2", "trainer=fsdp", "model=qwen2.5-math-7b"]) == 0
    assert validate_main(["fpa.lam=-1", "objective=sft"]) == 1
    out = capsys.readouterr().out
    assert "error: fpa.lam: λ must be >= 0" in out
