"""How methods are named in tables and plots: the objective, and FPA's λ when it is on."""

from __future__ import annotations


def objective_name(target: str, choice: str | None = None) -> str:
    """The objective's class name, or its config name when that names something else.

    ``objective=rft`` instantiates the SFT loss on verified-correct trajectories: it is shown as RFT.
    """
    cls = target.rsplit(".", 1)[-1]
    if choice and choice.replace("_", "").lower() != cls.lower():
        return choice.upper()
    return cls


def method_label(objective: str, lam: float, apply_to: str = "both", guard: str | None = None,
                 settings: str = "") -> str:
    """``DPO`` with FPA off; ``FPA-DPO (λ=1)`` or ``FPA-DPO (λ=1, rejected)`` with it on; a guard adds
    ``+ guard`` (``+ guard@current`` for the ablation); ``settings`` (the swept values that tell runs of one
    method apart, e.g. ``beta=0.1, lr=1e-05``) are added in brackets."""
    suffix = "" if guard is None else " + guard" if guard == "future" else f" + guard@{guard}"
    suffix += f" [{settings}]" if settings else ""
    if not lam:
        return objective + suffix
    side = "" if apply_to == "both" else f", {apply_to}"
    return f"FPA-{objective} (λ={float(lam):g}{side}){suffix}"
