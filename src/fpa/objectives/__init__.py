"""Offline objectives. Each lives in its own file and is chosen by ``conf/objective/<name>.yaml``."""

from fpa.objectives.base import Objective, ObjectiveInputs
from fpa.objectives.dpo import DPO
from fpa.objectives.grpo import GRPO
from fpa.objectives.ipo import IPO
from fpa.objectives.kto import KTO
from fpa.objectives.offline_pg import OfflinePG
from fpa.objectives.rpo import RPO
from fpa.objectives.sft import SFT
from fpa.objectives.simper import SimPER

__all__ = ["DPO", "GRPO", "IPO", "KTO", "RPO", "SFT", "Objective", "ObjectiveInputs", "OfflinePG", "SimPER"]
