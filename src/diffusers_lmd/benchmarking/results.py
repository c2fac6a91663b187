"""From rows to the headline: the target PSNR every masked autoencoder reaches, and when each method got there."""

from __future__ import annotations

from .registry import MAE_FAMILY


def best_psnr(row: dict) -> float | None:
    """The highest held-out PSNR a row reached within its budget (``None`` without a PSNR curve)."""
    return max((point[2] for point in row.get("curve", [])), default=None)


def target_psnr(rows: list[dict]) -> float | None:
    """The highest PSNR that *every* masked-autoencoder row reaches: the lowest of their best PSNRs."""
    bests = [best_psnr(r) for r in rows if r["method"] in MAE_FAMILY]
    bests = [b for b in bests if b is not None]
    return min(bests) if bests else None


def first_reach(curve: list, target: float) -> tuple[float | None, int | None]:
    """``(train_seconds, step)`` of the first evaluation at or above ``target``, or ``(None, None)``."""
    for seconds, step, value in curve:
        if value >= target:
            return seconds, step
    return None, None


def add_time_to_target(rows: list[dict], target: float | None) -> None:
    """Set ``time_to_target_s`` and ``steps_to_target`` on every row (``None`` when never reached or no PSNR)."""
    for row in rows:
        seconds, step = (None, None) if target is None else first_reach(row.get("curve", []), target)
        row["time_to_target_s"], row["steps_to_target"] = seconds, step


def speedup(rows: list[dict], method: str = "lmd-cs", reference: str = "mae-pixel") -> dict | None:
    """How ``method``'s time to the target compares with ``reference``'s, split into steps x seconds per step.

    ``time_ratio = steps_ratio * step_cost_ratio`` exactly, where the step cost is the mean seconds per step up
    to the target; the paper's claim is ``time_ratio <= 1/3`` for LMD-CS against MAE. ``None`` unless both rows
    reached the target at a step after the first.
    """
    found = {r["method"]: r for r in rows}
    if method not in found or reference not in found:
        return None
    a, b = found[method], found[reference]
    if not a.get("steps_to_target") or not b.get("steps_to_target"):
        return None
    steps_ratio = a["steps_to_target"] / b["steps_to_target"]
    time_ratio = a["time_to_target_s"] / b["time_to_target_s"]
    return {
        "method": method,
        "reference": reference,
        "time_ratio": time_ratio,
        "steps_ratio": steps_ratio,
        "step_cost_ratio": time_ratio / steps_ratio,
        "meets_one_third": time_ratio <= 1 / 3,
    }
