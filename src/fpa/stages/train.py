"""Stage `train`: the offline objective (+ FPA) on the reference's verified trajectories.

- ``data.batch_size`` is the global batch (examples per optimizer step) whatever the number of
  processes; each process takes ``data.micro_batch_size`` examples per forward (default: its
  share), and gradient accumulation makes up the rest. 1 process and R processes see the same
  examples at every step (:mod:`fpa.resume`).
- ``<run_dir>/checkpoints/last.ckpt`` is written every ``callbacks.checkpoint.every_n_train_steps`` steps (atomically;
  a directory of shards under ``trainer=fsdp``). With ``train.resume=auto`` a run whose run dir
  already has one resumes from it exactly: data position, optimizer, scheduler and RNG, if it was
  made with the same result-changing settings (:mod:`fpa.checkpoint_config`; else
  ``train.resume_override=true``).
- ``train.precompute_reference`` (auto: at ``fpa.lam=0`` for objectives with ``reference_on_served_rows``):
  the reference's token log-probs of every example are computed once, cached
  (:mod:`fpa.stages.reference_logprobs`) and served with the batches; the module loads no reference.
- A NaN/inf loss stops the run (:class:`fpa.guards.NonFiniteLossError`) before the step is taken;
  a GPU out-of-memory error becomes :class:`fpa.guards.OutOfMemoryHint`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L

from fpa import checks
from fpa.checkpoint_config import RecordConfig
from fpa.data.records import load_trajectories
from fpa.data.reference import check_setting as check_precompute_setting, enabled as precompute_enabled
from fpa.guards import ConfigError, oom_hints
from fpa.models.loading import load_tokenizer
from fpa.progress import StepBar
from fpa.module import OfflineRLModule
from fpa.resume import find_last
from fpa.run_status import Heartbeat
from fpa.safe_load import check_checkpoint

if TYPE_CHECKING:
    from fpa.config.parts import TrainParts

RESUME_CHOICES = ("auto", "never", "must")


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` node: how long the policy trains and whether a run resumes."""

    max_steps: int = 200
    resume: str | bool | None = "auto"  # auto | never | must | a checkpoint path or run directory
    log_every_n_steps: int = 5
    resume_override: bool = False  # resume even if the checkpoint was made with other settings
    # auto | true | false: the reference's token log-probs computed once (cached) and no reference model in
    # training; auto = wherever allowed (FPA off, an objective with reference_on_served_rows: fpa.data.reference)
    precompute_reference: str | bool = "auto"
    # N > 0: every N optimizer steps the live policy samples the next round of training data (fpa.generation.rollouts)
    rollout_every: int = 0

    def __post_init__(self) -> None:
        checks.number("max_steps", self.max_steps, 0, integer=True)
        checks.number("log_every_n_steps", self.log_every_n_steps, 1, integer=True)
        if not isinstance(self.resume_override, bool):
            raise ConfigError(f"resume_override: must be true or false, got {self.resume_override!r}")
        check_precompute_setting(self.precompute_reference)
        checks.number("rollout_every", self.rollout_every, 0, integer=True)
        if self.rollout_every and self.precompute_reference is True:
            raise ConfigError(f"precompute_reference: true, but rollout_every={self.rollout_every} samples new "
                              "examples during training (nothing to precompute); set it to auto or false")
        if isinstance(self.resume, str) and self.resume not in RESUME_CHOICES:
            from fpa.models.spec import check_input_path

            check_input_path("resume", self.resume, "checkpoint")


def resolve_resume(run_dir: Path, resume) -> Path | None:
    """The checkpoint to resume from: ``auto`` (the run dir's last.ckpt if any), ``never``, ``must``, or a path."""
    if resume is None or resume is False or resume == "never":
        return None
    ckpt_dir = Path(run_dir) / "checkpoints"
    if resume is True or resume in ("auto", "must"):
        last = find_last(ckpt_dir)
        if last is None and resume in (True, "must"):
            raise ConfigError(f"train.resume={resume}: no checkpoint in {ckpt_dir}")
        return last
    path = Path(str(resume)).expanduser()
    if path.is_dir() and not (path / "meta.pt").exists():  # a run directory, not a sharded checkpoint
        last = find_last(path / "checkpoints")
        if last is None:
            raise ConfigError(f"train.resume={resume}: no checkpoints/last.ckpt in that run directory")
        return last
    if not path.exists():
        raise ConfigError(f"train.resume={resume}: no such checkpoint (choices: {', '.join(RESUME_CHOICES)}, "
                          "a .ckpt path or a run directory)")
    return path


def resume_checkpoint(parts: TrainParts, run_dir: Path) -> Path | None:
    """The checkpoint this run resumes from, checked: safe and readable, made with the same settings.

    Cheap (the checkpoint is memory-mapped), so the entry point calls it before any stage runs.
    A difference in a result-changing setting is refused unless ``train.resume_override=true``.
    """
    from fpa.checkpoint_config import check_resume_config

    ckpt_path = resolve_resume(run_dir, parts.train.resume)
    if ckpt_path is None:
        return None
    saved = check_checkpoint(ckpt_path)  # refuse a checkpoint that would unpickle arbitrary objects
    changed = check_resume_config(saved, parts.config, ckpt_path, parts.train.resume_override)
    if changed:
        print(f"fpa-train: train.resume_override=true: resuming {ckpt_path} despite {', '.join(changed)}")
    return ckpt_path


def save_policy(trainer: L.Trainer, module: OfflineRLModule, tokenizer, out: Path) -> Path:
    """``save_pretrained`` the policy from rank 0 (gathering shards first under FSDP); every rank returns ``out``.

    A LoRA policy (a peft model) writes an adapter directory: ``adapter_config.json``, the adapter
    weights and the tokenizer (:func:`fpa.models.loading.load_model` merges it into its base).
    """
    from fpa.strategies import full_policy_state, is_sharded

    state = full_policy_state(module, module.policy, cpu_offload=True) if is_sharded(module) else None
    if trainer.is_global_zero:
        if state is not None:
            module.policy.save_pretrained(out, state_dict=state)
        else:
            module.policy.save_pretrained(out)
        tokenizer.save_pretrained(out)
    trainer.strategy.barrier("policy-saved")
    return out


def rollout_data(parts: TrainParts, tokenizer, reference: str, micro: int, accumulate: int, out_dir: Path):
    """The DataModule of a run with rollouts (``train.rollout_every``): the offline stage's problems and prompts."""
    from fpa.generation.rollouts import RolloutData
    from fpa.stages.sample import rl_problems

    problems = rl_problems(parts.task, parts.generate, parts.sft_skip, parts.data_seed)
    prompts = [parts.model.prompt(p.question, tokenizer) for p in problems]
    return RolloutData(tokenizer, parts.objective, parts.data, parts.rollout, parts.train.rollout_every, micro,
                       accumulate, parts.train.max_steps, parts.seed, problems, prompts, parts.task, out_dir,
                       model_path=reference, chunk_size=parts.module.chunk_size)


def train_policy(parts: TrainParts, reference: str, trajectories: Path, run_dir: Path, loggers: list,
                 callbacks: list | None = None, counts: dict | None = None) -> Path:
    """Train the policy from ``reference`` on ``trajectories``; returns the saved policy directory.

    ``counts``, if given, receives the compute ledger's passes (``"passes"``, summed over processes),
    the policy's :class:`fpa.ledger.ModelSize` (``"size"``) and, with a precomputed reference, that
    stage's pass (``"reference_logprobs"``: its tokens, whether it was cached, the seconds of the call).
    """
    run_dir = Path(run_dir)
    t, d, objective = parts.train, parts.data, parts.objective
    ckpt_path = resume_checkpoint(parts, run_dir)
    L.seed_everything(parts.seed, verbose=False)
    trust = parts.model.trust_remote_code
    tok = load_tokenizer(reference, trust_remote_code=trust)
    if t.rollout_every:
        records = None  # the live policy samples the training data (fpa.generation.rollouts)
    else:
        records, skipped = load_trajectories(trajectories, skip_invalid=d.skip_invalid)
        if skipped:
            print(f"fpa-train: skipped {skipped} invalid trajectory records in {trajectories}")
    own = [RecordConfig(parts.config), Heartbeat(run_dir), StepBar(f"train ({type(objective).__name__})")]
    trainer = parts.trainer(t.max_steps, run_dir, loggers=loggers,
                            callbacks=[*parts.callbacks, *own, *(callbacks or [])],
                            log_every_n_steps=t.log_every_n_steps, enable_checkpointing=True,
                            enable_progress_bar=False, use_distributed_sampler=False)
    micro, accumulate = d.layout(trainer.num_devices * trainer.num_nodes)
    trainer.accumulate_grad_batches = accumulate
    if t.rollout_every:
        data = rollout_data(parts, tok, reference, micro, accumulate, run_dir / "rollouts")
    else:
        data = d.datamodule(tok, objective, records, micro, parts.seed)
    precomputed = not t.rollout_every and precompute_enabled(t.precompute_reference, objective, parts.fpa)
    if precomputed:  # every example's reference log-probs, once (cached); the module then loads no reference
        from fpa.stages.reference_logprobs import for_training

        data.setup("fit")
        start = time.perf_counter()
        _, cached = for_training(parts, reference, data)
        if counts is not None:  # one reference forward over every example's rows, no backward
            from fpa.data.reference import rows_of
            from fpa.ledger import Pass

            scored = Pass()
            for ex in data.train_set:
                for p, c, *_ in rows_of(ex, data.kind):
                    scored.add([len(p) + len(c)], projected=len(c))
            counts["reference_logprobs"] = {"pass": scored, "cached": cached,
                                            "seconds": time.perf_counter() - start}
    module = parts.module.build(reference, objective, parts.fpa, parts.optimizer, parts.scheduler,
                                reference_path=reference, dtype=parts.model.dtype,
                                policy_dtype="float32" if parts.trainer.precision_is_mixed else None,
                                trust_remote_code=trust, lora=parts.model.lora, precomputed_reference=precomputed)
    with oom_hints(micro_batch_size=micro, global_batch=d.batch_size, chunk_size=parts.module.chunk_size,
                   gradient_checkpointing=parts.module.gradient_checkpointing, max_length=d.max_length):
        trainer.fit(module, data, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    if counts is not None:
        counts.update(passes=module.ledger_passes, size=module.model_size)
    return save_policy(trainer, module, tok, run_dir / "policy")
