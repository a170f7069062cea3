"""The settings a checkpoint was made with, kept inside it, and the check a resume makes against them.

:class:`RecordConfig` writes the result-changing part of the resolved config
(:func:`fpa.config.identity.result_config`) into every checkpoint under :data:`KEY`.
:func:`check_resume_config` compares it with the config a run is resumed under and refuses a
difference, naming the keys, unless ``train.resume_override=true``.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from fpa.config.identity import differences, result_config
from fpa.guards import CheckpointError

KEY = "fpa_config"


class RecordConfig(L.Callback):
    """Puts the run's result-changing settings into each checkpoint it saves."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = result_config(config)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[KEY] = self.config


def check_resume_config(saved: Any, config: dict[str, Any], ckpt_path: Any, override: bool) -> list[str]:
    """The differences between the checkpoint's settings and ``config``; raises unless ``override``.

    A checkpoint made before settings were recorded (no :data:`KEY`) is not compared (returns []).
    """
    recorded = saved.get(KEY) if isinstance(saved, dict) else None
    if not isinstance(recorded, dict):
        return []
    changed = differences(recorded, config)
    if changed and not override:
        shown = ", ".join(changed[:8]) + (f", and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise CheckpointError(f"train.resume: the checkpoint {ckpt_path} was made with other settings: {shown}; "
                              "set train.resume_override=true to resume anyway, or train.resume=never to start over")
    return changed
