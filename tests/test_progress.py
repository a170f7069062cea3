"""The step bar of the training stages: counts optimizer steps to max_steps, shows loss and dev accuracy."""

from types import SimpleNamespace

import torch

from fpa.progress import StepBar


def test_step_bar_counts_steps_from_a_resumed_start_and_shows_metrics(capsys):
    trainer = SimpleNamespace(is_global_zero=True, max_steps=40, global_step=10, callback_metrics={})
    bar = StepBar("sft (warm start)")
    bar.on_train_start(trainer, None)
    trainer.global_step = 24
    trainer.callback_metrics = {"loss": torch.tensor(0.25), "sft/dev_accuracy": torch.tensor(0.5)}
    bar.on_train_batch_end(trainer, None, None, None, 0)
    assert bar.bar.n == 24 and bar.bar.total == 40
    bar.bar.refresh()
    bar.on_train_end(trainer, None)
    err = capsys.readouterr().err
    assert "sft (warm start)" in err and "24/40" in err and "loss=0.250" in err and "dev_acc=0.500" in err


def test_step_bar_is_silent_off_rank_zero(capsys):
    trainer = SimpleNamespace(is_global_zero=False, max_steps=4, global_step=0, callback_metrics={})
    bar = StepBar("train")
    bar.on_train_start(trainer, None)
    bar.on_train_batch_end(trainer, None, None, None, 0)
    bar.on_train_end(trainer, None)
    assert bar.bar is None and capsys.readouterr().err == ""
