"""Benchmark registry, suite configs, suite scoring, and the eval callback in a tiny Lightning fit."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from testconfig import compose_config
from fpa.config.build import build
from fpa.config.parts import train_parts
from fpa.evaluation.benchmarks import Benchmark
from fpa.evaluation.callback import BenchmarkEvalCallback
from fpa.guards import ConfigError
from fpa.evaluation.runner import EvalSettings, evaluate_suite, vote_key, write_samples
from fpa.generation.hf import Sample
from fpa.models.loading import load_model, load_tokenizer
from fpa.models.tiny import build_tiny_model
from fpa.prompting import PromptFormat
from fpa.tasks.arith import ArithTask

SOURCES = Path(__file__).parent / "fixtures" / "sources"

# name -> (stand-in file in the source's real schema, expected gold answers in order)
STAND_INS = {
    "math500": ("math500_test.jsonl", ["\\left( 3, \\frac{\\pi}{2} \\right)", "26000", "11\\sqrt2"]),
    "gsm8k": ("gsm8k_test.jsonl", ["18", "3", "70000"]),
    "aime24": ("aime_2024.parquet", ["204", "025"]),
    "aime25": ("aime25_test.jsonl", ["70", "117"]),
    "amc23": ("amc23_test.json", ["27", "36", "45"]),
    "minerva_math": ("minervamath_test.jsonl", ["1.6", "4.5e33", "8"]),
    "olympiadbench": ("olympiadbench_test.jsonl", ["2", "\\frac{1}{4}", "1, -1"]),
}
# A completion a model might write for each stand-in's first problem, and one that is wrong.
RIGHT_WRONG = {
    "math500": ("the point is $\\boxed{(3, \\frac{\\pi}{2})}$", "\\boxed{(3, \\pi)}"),
    "gsm8k": ("9 * 2 = 18\n#### 18", "#### 16"),
    "aime24": ("The answer is $\\boxed{204}$.", "\\boxed{240}"),
    "aime25": ("\\boxed{70}", "\\boxed{7}"),
    "amc23": ("They meet after 1.5 hours, so \\boxed{27}", "\\boxed{27.5}"),
    "minerva_math": ("The image is \\boxed{1.6} cm across.", "\\boxed{16}"),
    "olympiadbench": ("So the answer is \\boxed{2}", "\\boxed{3}"),
}


BENCHMARKS = Path(__file__).resolve().parents[1] / "conf" / "benchmarks"


def bench(name: str, n_problems: int | None = None, **task) -> Benchmark:
    """The shipped benchmark ``conf/benchmarks/<name>.yaml``, its task options overridden."""
    node = OmegaConf.merge(OmegaConf.load(BENCHMARKS / f"{name}.yaml"), {"task": task, "name": name,
                                                                          "n_problems": n_problems})
    return build(node, f"benchmarks.{name}")


def test_math7_is_the_seven_real_benchmarks():
    suite = train_parts(compose_config(*_overrides_for_math7(), "benchmark=math7")).benchmark
    assert set(suite.benchmarks) == set(STAND_INS) and suite.name == "math7"


@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_each_real_benchmark_loads_its_stand_in(name):
    file, answers = STAND_INS[name]
    b = bench(name, path=str(SOURCES / file))
    problems = b.problems()
    assert [p.answer for p in problems] == answers
    assert all(p.question.strip() and p.split == "test" and p.id.startswith(f"{b.task.name}/test/")
               for p in problems)
    right, wrong = RIGHT_WRONG[name]
    assert b.verify(problems[0], right).reward == 1.0
    assert b.verify(problems[0], wrong).reward == 0.0
    assert b.answer_format == "boxed" and "\\boxed{}" in b.question_text("Q?")


def test_stand_in_details_follow_the_real_schemas():
    olymp = bench("olympiadbench", path=str(SOURCES / "olympiadbench_test.jsonl")).problems()
    assert olymp[2].question.startswith("The following problem is about real numbers.\n\n")  # context first
    assert olymp[2].metadata["is_multiple_answer"] is True
    m500 = bench("math500", path=str(SOURCES / "math500_test.jsonl")).problems()
    assert m500[0].id == "math500/test/test/precalculus/807.json" and m500[0].metadata["subject"] == "Precalculus"
    aime = bench("aime24", path=str(SOURCES / "aime_2024.parquet")).problems()
    assert aime[1].id == "aime24/test/61" and aime[1].metadata["year"] == "2024"


def test_benchmark_nodes_options_and_caps():
    long = bench("arith", n_problems=5, n_terms=9)
    assert isinstance(long.task, ArithTask) and long.task.n_terms == 9 and long.answer_format == "arith"
    assert len(long.problems()) == 5 and long.question_text("1+2") == "1+2"
    aime = bench("aime24", n_problems=64, path=str(SOURCES / "aime_2024.parquet"))
    assert len(aime.problems()) == 2  # n_problems caps: a smaller fixed set gives all it has
    with pytest.raises(ValueError, match="only"):  # a generator that cannot make enough says so
        bench("arith", n_problems=50, n_terms=2, max_operand=3).problems()
    with pytest.raises(ConfigError, match="benchmarks.arith.answer_format: must be one of|unknown answer_format"):
        build(OmegaConf.merge(OmegaConf.load(BENCHMARKS / "arith.yaml"), {"answer_format": "latex"}), "benchmarks.arith")
    with pytest.raises(ConfigError, match="benchmarks.arith.task.n_term: unknown key"):
        build(OmegaConf.merge(OmegaConf.load(BENCHMARKS / "arith.yaml"), {"task": {"n_term": 3}}), "benchmarks.arith")


def _overrides_for_math7() -> list[str]:
    return [f"benchmark.benchmarks.{name}.task.path={SOURCES / file}" for name, (file, _) in STAND_INS.items()]


@pytest.mark.parametrize("suite, overrides", [
    ("math7", _overrides_for_math7()),
    ("embedded", ["task.n_terms=3", "task.max_operand=20"]),
    ("arith", ["task.n_terms=3"]),
])
def test_suite_configs_compose_build_and_load(suite, overrides):
    from fpa.config.parts import eval_parts

    cfg = compose_config("model_path=unused", f"benchmark={suite}", *overrides, name="eval")
    built = eval_parts(cfg).benchmark
    benchmarks = list(built.benchmarks.values())
    assert [b.name for b in benchmarks] == list(cfg.benchmark.benchmarks)
    for b in benchmarks:
        assert b.problems(), b.name
    if suite == "embedded":
        arith = {b.name: b.task for b in benchmarks if isinstance(b.task, ArithTask)}
        assert arith["arith"].n_terms == 3 and arith["arith_8"].n_terms == 8  # training length, then longer
        assert {t.max_operand for t in arith.values()} == {20}
        assert {"gsm_symbolic", "champ"} <= {b.name for b in benchmarks}
    if suite == "math7":
        assert len(benchmarks) == 7 and built.pass_at == [1, 4] and built.maj_at == [4]


class ScriptedSampler:
    """Returns fixed completions per question, in shuffled order, like a backend would (any order)."""

    tokenizer = None

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script, self.calls = script, []

    def sample(self, prompts, n, temperature, top_p, seed, desc):
        self.calls.append({"n": n, "temperature": temperature, "seed": seed})
        out = [Sample(i, j, self.script[p.strip()][j], "stop", 3) for i, p in enumerate(prompts) for j in range(n)]
        random.Random(seed).shuffle(out)
        return out


def _gsm8k_script(gsm: Benchmark) -> dict[str, list[str]]:
    q = [p.question for p in gsm.problems()]
    return {
        q[0]: ["#### 18", "#### 17", "\\boxed{18}", "#### 5"],  # 2/4 right; majority 18 (right)
        q[1]: ["#### 4", "The answer is 4.", "#### 3", "no idea"],  # 1/4 right; majority 4 (wrong)
        q[2]: ["#### 70,000", "\\boxed{70000}", "#### 1", "#### 2"],  # 2/4; "70,000" and "70000" vote together
    }


def test_suite_scores_pass_at_k_majority_and_average_exactly(tmp_path):
    gsm = bench("gsm8k", path=str(SOURCES / "gsm8k_test.jsonl"))
    arith = bench("arith", n_problems=2, n_terms=2, max_operand=9)
    script = {**_gsm8k_script(gsm), **{p.question: [p.solution] * 4 for p in arith.problems()}}
    settings = EvalSettings(k=4, pass_at=[2, 4], maj_at=[4], instruction="", seed=5)
    result = evaluate_suite(ScriptedSampler(script), [gsm, arith], PromptFormat(), settings, suite="t")
    g = result.benchmarks["gsm8k"].metrics
    assert g["pass@1"] == pytest.approx((0.5 + 0.25 + 0.5) / 3)
    assert g["pass@2"] == pytest.approx((5 / 6 + 0.5 + 5 / 6) / 3)  # 1 - C(n-c, 2) / C(4, 2)
    assert g["pass@4"] == pytest.approx(1.0) and g["maj@4"] == pytest.approx(2 / 3)
    assert result.benchmarks["arith"].metrics["pass@1"] == 1.0
    assert result.benchmarks["arith"].metrics["process"] == 1.0 and "process" not in g  # only tasks that judge steps
    flat = result.flat_metrics()
    assert flat["eval/avg/pass@1"] == pytest.approx(((0.5 + 0.25 + 0.5) / 3 + 1.0) / 2)
    assert flat["eval/gsm8k/maj@4"] == pytest.approx(2 / 3) and "eval/arith/pass@4" in flat
    assert "eval/avg/process" not in flat
    b = result.benchmarks["gsm8k"]
    assert b.n_problems == 3 and b.n_samples == 12 and b.settings["seed"] == 5
    assert [r["sample"] for r in b.samples[:4]] == [0, 1, 2, 3]  # rows come back in (problem, sample) order
    assert {r["extracted"] for r in b.samples if r["problem_id"] == gsm.problems()[2].id} == \
        {"70,000", "70000", "1", "2"}
    table = result.markdown("t")
    assert "| gsm8k | 3 | 0.417 |" in table and "**average**" in table
    paths = write_samples(result, tmp_path)
    assert len(Path(paths["gsm8k"]).read_text().splitlines()) == 12


def test_ranks_split_the_problems_and_their_sums_make_the_whole():
    """Each rank scores its share; the metric states are sums (reduced with dist_reduce_fx="sum" under
    torch.distributed), so problem-weighted rank results must give the single-process numbers."""
    gsm = bench("gsm8k", path=str(SOURCES / "gsm8k_test.jsonl"))
    settings = EvalSettings(k=4, pass_at=[2, 4], maj_at=[4], instruction="")
    single = evaluate_suite(ScriptedSampler(_gsm8k_script(gsm)), [gsm], PromptFormat(), settings).benchmarks["gsm8k"]
    parts = [evaluate_suite(ScriptedSampler(_gsm8k_script(gsm)), [gsm], PromptFormat(), settings, rank=r,
                            world_size=2).benchmarks["gsm8k"] for r in (0, 1)]
    ids = [{row["problem_id"] for row in p.samples} for p in parts]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 3 and [p.n_problems for p in parts] == [2, 1]
    for key, value in single.metrics.items():
        assert sum(p.metrics[key] * p.n_problems for p in parts) / 3 == pytest.approx(value), key


def test_vote_key_groups_equal_numbers():
    assert vote_key("0.5") == vote_key("1/2") == vote_key("$0.50$")
    assert vote_key("1,000") == vote_key("1000")
    assert vote_key("\\frac{1}{2}") != vote_key("x") and vote_key(None) is None


def test_settings_validate_k():
    with pytest.raises(ValueError, match="pass_at"):
        EvalSettings(k=2, pass_at=[4])
    assert EvalSettings(k=8).pass_at == [1, 8] and EvalSettings(k=8).maj_at == [8]


# -- the callback in a tiny Lightning fit -------------------------------------------------------

class TinyLM(L.LightningModule):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.policy = load_model(path)

    def training_step(self, batch, batch_idx):
        loss = self.policy(input_ids=batch[0], labels=batch[0]).loss
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.policy.parameters(), lr=1e-2)


def test_callback_logs_benchmark_metrics_during_fit(tmp_path):
    tiny = build_tiny_model(tmp_path / "tiny", hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                            max_positions=64)
    tok = load_tokenizer(str(tiny))
    cfg = compose_config("benchmark=arith", "task.n_terms=2", "task.max_operand=9",
                         "benchmark.n_problems=3", "benchmark.k=2", "benchmark.pass_at=[1,2]", "benchmark.maj_at=[2]",
                         "benchmark.max_new_tokens=6", "benchmark.benchmarks.arith_long.max_new_tokens=6",
                         "callbacks.eval.every_n_steps=2")
    [callback] = [c for c in train_parts(cfg).callbacks if isinstance(c, BenchmarkEvalCallback)]
    assert callback.every_n_steps == 2 and callback.tokenizer is None  # the policy's own, loaded at setup
    callback.tokenizer, callback.samples_dir = tok, tmp_path / "samples"
    data = DataLoader(TensorDataset(torch.randint(4, 60, (8, 10))), batch_size=4)
    logger = CSVLogger(str(tmp_path), name="logs")
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=logger, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1)
    trainer.fit(TinyLM(str(tiny)), data)

    assert [h["step"] for h in callback.history] == [2, 3]  # every 2 steps, and at the end
    assert "eval/avg/pass@1" in trainer.callback_metrics
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    for key in ("eval/arith/pass@1", "eval/arith/pass@2", "eval/arith/maj@2", "eval/arith_long/pass@1",
                "eval/avg/pass@1"):
        assert key in rows[0], key
        assert sorted(int(r["step"]) for r in rows if r[key] != "") == [2, 3]
    assert any(r.get("train/loss") for r in rows)  # training metrics still logged alongside
    assert (tmp_path / "samples" / "step-3" / "arith.jsonl").exists()
    assert (tmp_path / "samples" / "step-3" / "results.json").exists()


def test_benchmark_problems_are_loaded_once():
    class Counting(ArithTask):
        calls = 0

        def problems(self, split, n, seed=0):
            Counting.calls += 1
            return super().problems(split, n, seed)

    bench = Benchmark(name="a", task=Counting(n_terms=2, max_operand=9), answer_format="arith", n_problems=2)
    bench.problems(), bench.problems()
    assert Counting.calls == 1
