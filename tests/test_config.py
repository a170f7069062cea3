"""The config is the schema: every shipped YAML builds, each mistake gives one clear line naming the
key, entry points check before any model loads, and stage cache keys follow what each stage reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fpa.cli.validate import main as validate_main
from fpa.config.build import build
from fpa.config.compose import check, check_presets, compose, options
from fpa.config.parts import train_parts
from fpa.config.rules import fpa_changes_nothing
from fpa.guards import ConfigError
from fpa.stages.keys import pipeline_keys

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_every_preset_and_experiment_config_builds():
    results = check_presets()
    for group in ("model", "trainer", "objective", "experiment", "benchmark"):
        seen = {o.split("=", 1)[1] for _, ov, _ in results for o in ov if o.startswith(f"{group}=")}
        assert seen == set(options(group)), group  # discovered from conf/, not a hand-kept list
    bad = [(name, ov, problems) for name, ov, problems in results if problems]
    assert not bad, bad


@pytest.mark.parametrize("group", ["task", "logger", "optimizer", "scheduler", "fpa"])
def test_every_option_of_the_other_groups_builds(group):
    for name in options(group):
        cfg = compose("train", [f"{group}={name}"])
        assert check(cfg) == [], (group, name)


def test_every_benchmark_and_callback_file_instantiates():
    for path in sorted((CONF / "benchmarks").glob("*.yaml")):
        bench = build(OmegaConf.load(path), f"benchmarks.{path.stem}")
        assert callable(bench.task.verify), path
    built = {type(cb).__name__ for cb in train_parts(compose("train", [])).callbacks}
    for path in sorted((CONF / "callbacks").glob("*.yaml")):
        [(name, node)] = OmegaConf.load(path).items()
        assert node._target_.rsplit(".", 1)[1] in built, f"{path.name} is not in train.yaml's callbacks list"


def test_real_model_experiments_are_complete():
    for name in ("qwen2.5-math-1.5b", "qwen2.5-math-7b", "llama-3.2-3b-instruct", "deepseek-math-7b"):
        parts = train_parts(compose("train", [f"experiment={name}"]))
        m = parts.model
        assert "/" in m.name_or_path and m.dtype == "bfloat16" and m.warm_start is False and not parts.sft.enabled
        assert m.trust_remote_code is False and m.prompt.use_chat_template is True
        assert parts.data.max_length <= m.max_positions and parts.generate.max_new_tokens >= 512
        assert parts.generate.backend == "vllm" and parts.trainer.precision == "bf16-mixed"
        assert parts.benchmark.name == "math7" and parts.module.gradient_checkpointing
        assert "\\boxed{}" in (m.prompt.template.format(question="q") + (m.prompt.system or ""))


@pytest.mark.parametrize("overrides,expected", [
    (["objective=nope"], "objective=nope: no such config (conf/objective has: dpo"),
    (["objective._target_=fpa.objectives.nope.Nope"], "objective._target_: cannot import 'fpa.objectives.nope.Nope'"),
    (["objective.beta=0"], "objective.beta: must be a finite number > 0, got 0"),
    (["objective.beta=inf"], "objective.beta: must be a finite number > 0, got inf"),
    (["+objective.bta=1"], "objective.bta: unknown key (did you mean beta?)"),
    (["objective=kto", "objective.desirable_weight=-1"], "objective.desirable_weight: must be a finite number >= 0"),
    (["objective=sft", "fpa.lam=1.0"], "fpa.lam: λ=1.0 with objective SFT does nothing"),
    (["objective=rft", "fpa.lam=2"], "fpa.lam: λ=2 with objective SFT does nothing"),
    (["task=gsm8k", "task.path=/no/such/gsm8k.jsonl"], "task.path: data file /no/such/gsm8k.jsonl does not exist"),
    (["model.name_or_path=/no/such/model"], "model.name_or_path: model directory /no/such/model does not exist"),
    (["model.reference=/no/such/ref"], "model.reference: reference model directory /no/such/ref does not exist"),
    (["data.trajectories=/no/such/set"], "data.trajectories: trajectory set /no/such/set does not exist"),
    (["train.resume=/no/such/last.ckpt"], "train.resume: checkpoint /no/such/last.ckpt does not exist"),
    (["model.dtype=fp8"], "model.dtype: must be one of float32 | bfloat16 | float16 | auto, got 'fp8'"),
    (["model.prompt.template=hello"], "model.prompt.template: must contain {question}"),
    (["+model.prompt.style=chat"], "model.prompt.style: unknown key"),
    (["+trainer.gpus=2"], "trainer.gpus: unknown key (valid keys: accelerator,"),
    (["+trainer.max_step=2"], "trainer.max_step: unknown key (did you mean max_steps"),
    (["data.batch_size=6", "data.micro_batch_size=4"], "data.micro_batch_size: 4 does not divide data.batch_size=6"),
    (["data.batch_size=0"], "data.batch_size: must be an integer >= 1, got 0"),
    (["data.overlong=cut"], "data.overlong: must be one of drop | truncate, got 'cut'"),
    (["model.build.max_positions=64"], "data.max_length: 128 exceeds the model's 64 positions"),
    (["model=qwen2.5-math-1.5b", "data.max_length=8192"], "data.max_length: 8192 exceeds the model's 4096 positions"),
    (["optimizer.lr=-1"], "optimizer.lr: must be a finite number > 0, got -1"),
    (["optimizer.lr=inf"], "optimizer.lr: must be a finite number > 0, got inf"),
    (["scheduler.min_lr_ratio=2"], "scheduler.min_lr_ratio: must be a finite number >= 0 and <= 1, got 2"),
    (["module.chunk_size=0"], "module.chunk_size: must be an integer >= 1, got 0"),
    (["generate.shard_size=0"], "generate.shard_size: must be an integer >= 1, got 0"),
    (["generate.backend=tgi"], "generate.backend: must be one of hf | vllm, got 'tgi'"),
    (["generate.top_p=0"], "generate.top_p: must be a finite number > 0 and <= 1, got 0"),
    (["sft.batch_size=0"], "sft.batch_size: must be an integer >= 1, got 0"),
    (["benchmark.k=0"], "benchmark.k: must be an integer >= 1, got 0"),
    (["benchmark.pass_at=[1,8]"], "benchmark.pass_at: pass_at / maj_at values must be in [1, k=4], got [8]"),
    (["callbacks.eval.every_n_steps=-1"], "callbacks.eval.every_n_steps: must be an integer >= 0, got -1"),
    (["callbacks.checkpoint.every_n_train_steps=0"],
     "callbacks.checkpoint.every_n_train_steps: must be an integer >= 1, got 0"),
    (["train.max_steps=-1"], "train.max_steps: must be an integer >= 0, got -1"),
])
def test_bad_configs_give_one_clear_line(overrides, expected):
    try:
        problems = check(compose("train", overrides))
    except ConfigError as e:
        problems = e.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]
    assert "\n" not in problems[0]


def test_open_mappings_pass_options_through():
    """Trainer arguments and backend engine options are open: the thing they reach checks them."""
    assert check(compose("train", ["+trainer.gradient_clip_val=1.0", "+generate.engine.max_model_len=4096"])) == []


def test_several_problems_are_all_reported():
    problems = check(compose("train", ["data.batch_size=0", "optimizer.lr=0", "benchmark.k=0"]))
    assert len(problems) == 3 and all("\n" not in p for p in problems)


def test_simper_with_fpa_is_allowed_sft_is_not():
    from fpa.objectives import DPO, KTO, SFT, OfflinePG, SimPER

    assert fpa_changes_nothing(SFT()) and not fpa_changes_nothing(SimPER())
    assert not any(fpa_changes_nothing(o) for o in (DPO(), KTO(), OfflinePG()))


def test_entry_points_check_before_loading_a_model(tmp_path, monkeypatch):
    from fpa.cli import eval as eval_cli
    from fpa.cli import generate as generate_cli
    from fpa.cli import train as train_cli

    def fail(*a, **k):
        pytest.fail("a model, tokenizer or stage was touched before the config was checked")

    for target in ("fpa.stages.prepare.build_tiny_model", "fpa.models.loading.AutoModelForCausalLM.from_pretrained",
                   "fpa.models.loading.AutoTokenizer.from_pretrained"):
        monkeypatch.setattr(target, fail)
    with pytest.raises(ConfigError, match="optimizer.lr"):
        train_cli.run(compose("train", ["optimizer.lr=0", f"paths.cache_dir={tmp_path}"]), tmp_path / "run")
    with pytest.raises(ConfigError, match="generate.k"):
        generate_cli.run(compose("generate", ["generate.k=0", f"paths.cache_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="benchmark.k"):
        eval_cli.run(compose("eval", ["model_path=/tmp", "benchmark.k=0"]), tmp_path / "eval")
    with pytest.raises(ConfigError, match="model_path: path /no/such"):
        eval_cli.run(compose("eval", ["model_path=/no/such/dir"]), tmp_path / "eval")


def test_validate_command(capsys):
    assert validate_main(["objective=kto", "fpa.lam=2", "trainer=fsdp", "model=qwen2.5-math-7b"]) == 0
    assert validate_main(["optimizer.lr=-1", "objective=sft"]) == 1
    out = capsys.readouterr().out
    assert "error: optimizer.lr: must be a finite number > 0, got -1" in out


# ------------------------------------------------------------------------------------- stage cache keys

READS = {  # what each stage receives (via interpolation, some settings reach several nodes)
    "model": ["model.build.hidden_size", "data_seed"],
    "sft": ["model.dtype", "model.prompt.template", "trainer.precision", "sft.lr", "task.n_terms",
            "generate.max_new_tokens", "data.max_length", "data_seed"],
    "trajectories": ["generate.k", "generate.temperature", "generate.n_problems", "generate.batch_size", "sft.lr",
                     "task.max_operand", "model.prompt.template", "sft.n_problems"],
    "eval": ["benchmark.k", "benchmark.seed", "benchmark.n_problems", "generate.backend", "task.n_terms",
             "model.dtype", "sft.lr"],
}
UNREAD = {
    "model": ["sft.lr", "generate.k", "objective.beta"],
    "sft": ["objective.beta", "fpa.lam", "train.max_steps", "optimizer.lr", "seed", "generate.k", "benchmark.k",
            "callbacks.eval.every_n_steps", "module.chunk_size"],
    "trajectories": ["objective.beta", "fpa.lam", "train.max_steps", "optimizer.lr", "seed", "benchmark.k",
                     "data.batch_size", "callbacks.eval.every_n_steps"],
    "eval": ["objective.beta", "fpa.lam", "train.max_steps", "optimizer.lr", "seed", "generate.k",
             "callbacks.eval.n_problems", "data.batch_size"],
}
CHANGES = {"model.dtype": "bfloat16", "model.prompt.template": "'Q: {question}'", "trainer.precision": "bf16-mixed",
           "model.build.hidden_size": 256,
           "generate.backend": "vllm", "task.n_terms": 3, "data_seed": 1}


def _changed(key: str, base) -> str:
    if key in CHANGES:
        return f"{key}={CHANGES[key]}"
    value = OmegaConf.select(base, key)
    return f"{key}={value + 1 if isinstance(value, int) else value * 0.5}"


@pytest.fixture(scope="module")
def base_keys():
    cfg = compose("train", [])
    return cfg, pipeline_keys(train_parts(cfg))


@pytest.mark.parametrize("stage", sorted(READS))
def test_a_stage_key_changes_with_what_it_reads_and_only_that(stage, base_keys):
    base, keys = base_keys
    for key in READS[stage]:
        changed = pipeline_keys(train_parts(compose("train", [_changed(key, base)])))
        assert changed[stage] != keys[stage], f"{stage} key ignores {key}"
    for key in UNREAD[stage]:
        changed = pipeline_keys(train_parts(compose("train", [_changed(key, base)])))
        assert changed[stage] == keys[stage], f"{stage} key changes with {key}, which it does not read"


def test_every_setting_of_the_nodes_a_stage_receives_is_in_its_key(base_keys):
    """Exhaustively: perturb each leaf of the sft and generate nodes; every valid change moves the key."""
    base, keys = base_keys
    for node, stage in (("sft", "sft"), ("generate", "trajectories")):
        for leaf, value in OmegaConf.to_container(base[node], resolve=True).items():
            if leaf.startswith("_") or isinstance(value, (dict, list, str)) or value is None:
                continue
            override = f"{node}.{leaf}={not value}" if isinstance(value, bool) else _changed(f"{node}.{leaf}", base)
            try:
                changed = pipeline_keys(train_parts(compose("train", [override])))
            except ConfigError:
                continue  # e.g. top_p=0.5 is fine, but halving an integer may make it invalid
            assert changed[stage] != keys[stage], f"{stage} key ignores {override}"


def test_fpa_report_checks_its_inputs(tmp_path):
    from fpa.cli.report import check as report_check

    with pytest.raises(ConfigError, match="runs: no such directory: /no/such/sweep"):
        report_check(OmegaConf.create({"runs": "/no/such/sweep", "out": None}))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="out: .* is a file"):
        report_check(OmegaConf.create({"runs": str(tmp_path), "out": str(tmp_path / "file")}))
    assert report_check(OmegaConf.create({"runs": [str(tmp_path)], "out": None})) == ([str(tmp_path)], tmp_path)


def test_entry_points_set_a_passive_openmp_wait_policy_before_torch_loads():
    import subprocess
    import sys

    code = ("import sys, os; import fpa.cli; assert 'torch' not in sys.modules; "
            "import fpa.cli.train; print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, check=True)
    assert out.stdout.strip() == "ACTIVE"  # a user's choice is kept
