"""Verification report of a trajectory set: accuracy per problem, pair yield, a length histogram.

``write_report`` puts ``stats.json`` (every number) and ``lengths.png`` (the histogram) next to
the trajectories. The share of problems with both correct and incorrect samples is the share
that yields preference pairs.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def _length(record: dict[str, Any]) -> int:
    # n_tokens is what the generator counted; a file without it falls back to characters.
    n = record.get("n_tokens")
    return int(n) if n is not None else len(record["completion"])


def length_histogram(lengths: list[int], n_bins: int = 20) -> dict[str, list[int]]:
    """Integer-edged bins covering [0, max]: ``counts[i]`` lengths fall in ``[edges[i], edges[i+1])``."""
    top = max(lengths, default=0) + 1
    width = max(1, -(-top // n_bins))
    edges = list(range(0, top + width, width))[: n_bins + 1]
    counts = [0] * (len(edges) - 1)
    for n in lengths:
        counts[min(n // width, len(counts) - 1)] += 1
    return {"edges": edges, "counts": counts}


def trajectory_report(records: list[dict[str, Any]], threshold: float = 0.5) -> dict[str, Any]:
    per_problem: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        per_problem[r["problem_id"]].append(r["reward"] > threshold)
    accuracy = {pid: sum(v) / len(v) for pid, v in sorted(per_problem.items())}
    mixed = sum(1 for v in per_problem.values() if 0 < sum(v) < len(v))
    n, n_prob = len(records), len(per_problem)
    process = [r.get("process") for r in records]
    return {
        "n_trajectories": n,
        "n_problems": n_prob,
        "accuracy": sum(float(r["reward"]) for r in records) / max(n, 1),
        "process_accuracy": (sum(bool(p) for p in process) / max(n, 1)
                             if any(p is not None for p in process) else None),
        "share_problems_with_pairs": mixed / max(n_prob, 1),
        "share_problems_all_correct": sum(all(v) for v in per_problem.values()) / max(n_prob, 1),
        "share_problems_all_wrong": sum(not any(v) for v in per_problem.values()) / max(n_prob, 1),
        "finish_reasons": dict(Counter(r.get("finish_reason") or "unknown" for r in records)),
        "length_histogram": length_histogram([_length(r) for r in records]),
        "per_problem_accuracy": accuracy,
    }


def plot_lengths(hist: dict[str, list[int]], path: Path, title: str = "completion lengths") -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    edges, counts = hist["edges"], hist["counts"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge", edgecolor="black")
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("samples")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(records: list[dict[str, Any]], out_dir: str | Path, plot: bool = True, **extra: Any) -> dict[str, Any]:
    """Write ``stats.json`` and (``plot``) ``lengths.png`` into ``out_dir``; ``extra`` (e.g. throughput) joins the JSON."""
    out_dir = Path(out_dir)
    report = {**trajectory_report(records), **extra}
    (out_dir / "stats.json").write_text(json.dumps(report, indent=2))
    if plot:
        plot_lengths(report["length_histogram"], out_dir / "lengths.png")
    return report
