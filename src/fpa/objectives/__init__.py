"""Offline objectives. Each lives in its own file and is chosen by ``conf/objective/<name>.yaml``."""

from fpa.objectives.base import Objective, ObjectiveInputs
from fpa.objectives.dpo import DPO
from fpa.objectives.sft import SFT

__all__ = ["DPO", "SFT", "Objective", "ObjectiveInputs"]
