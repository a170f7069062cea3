"""A progress bar over optimizer steps for the stages that train (the SFT warm start, the train stage).

Lightning's own bar counts batches of an epoch (and stays silent where it decides the output is not
interactive); this one counts optimizer steps towards ``max_steps`` on rank 0, with the loss and the
last dev accuracy beside it, and resumes at the step a resumed run starts from.
"""

from __future__ import annotations

import lightning as L
from tqdm.auto import tqdm


class StepBar(L.Callback):
    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.enabled and trainer.is_global_zero:
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            self.bar = tqdm(total=total, initial=trainer.global_step, desc=self.desc, unit="step",
                            dynamic_ncols=True, mininterval=1.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is None:
            return
        self.bar.update(trainer.global_step - self.bar.n)
        shown = {}
        for key, name in (("loss", "loss"), ("train/loss", "loss"), ("sft/dev_accuracy", "dev_acc")):
            value = trainer.callback_metrics.get(key)
            if value is not None:
                shown[name] = f"{float(value):.3f}"
        if shown:
            self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)
