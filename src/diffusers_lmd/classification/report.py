"""What a fine-tuning run reports: MAT@1/MAT@5 (method.md §5), final and best accuracy, time to a target, a plot."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..metrics import mean_accuracy_increase_time


def _check_records(records: Sequence[dict]) -> None:
    if not records:
        raise ValueError("No evaluations in the log: fine-tune for at least one --eval_steps interval.")
    for key in ("time", "top1", "top5"):
        if key not in records[0]:
            raise ValueError(
                f"Evaluation records need a {key!r} entry (eval_log.jsonl lines); got {sorted(records[0])}."
            )


def time_to_accuracy(records: Sequence[dict], target: float, key: str = "top1") -> float | None:
    """Training seconds at the first evaluation whose ``key`` accuracy reaches ``target`` (``None`` if never)."""
    _check_records(records)
    return next((float(r["time"]) for r in records if r[key] >= target), None)


def summarize_accuracy(records: Sequence[dict], target_top1: float | None = None) -> dict[str, float | None]:
    """MAT@1 and MAT@5 (mean training seconds between accuracy improvements), final/best accuracy and budget used.

    MAT@k is ``inf`` when top-k accuracy never improved on the first evaluation; ``time_to_target_s`` is set
    only when ``target_top1`` is given (``None`` if the run never reached it).
    """
    _check_records(records)
    times = [float(r["time"]) for r in records]
    summary: dict[str, float | None] = {
        "mat_at_1": mean_accuracy_increase_time(times, [r["top1"] for r in records]),
        "mat_at_5": mean_accuracy_increase_time(times, [r["top5"] for r in records]),
        "final_top1": records[-1]["top1"],
        "final_top5": records[-1]["top5"],
        "best_top1": max(r["top1"] for r in records),
        "steps": records[-1]["step"],
        "train_seconds": times[-1],
    }
    if target_top1 is not None:
        summary["time_to_target_s"] = time_to_accuracy(records, target_top1)
    return summary


def format_seconds(value: float | None) -> str:
    """``12.3`` for finite seconds, ``never`` for ``None`` / ``inf`` (a run that did not get there)."""
    return "never" if value is None or not math.isfinite(value) else f"{value:.3g}"


def plot_accuracy_curves(curves: dict[str, Sequence[dict]], path: str, title: str = "Validation accuracy") -> str:
    """Top-1 (solid) and top-5 (dashed) accuracy against training seconds, one colour per run; save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for (name, records), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        _check_records(records)
        times = [r["time"] for r in records]
        ax.plot(times, [r["top1"] for r in records], "o-", color=colour, markersize=3, label=f"{name} top-1")
        ax.plot(times, [r["top5"] for r in records], "--", color=colour, alpha=0.7, label=f"{name} top-5")
    ax.set_xlabel("training wall-clock time (s)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
