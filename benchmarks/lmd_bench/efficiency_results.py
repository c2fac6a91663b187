"""From rows to the headline: the target PSNR every masked autoencoder reaches, and when each method got there."""

from __future__ import annotations

import statistics

from .efficiency_registry import MAE_FAMILY, MAE_REFERENCES

# The rows whose runs (every seed) must all reach the target of a preset with a ``target_fraction``.
HEADLINE_METHODS = ("lmd-cs", *MAE_REFERENCES)


def best_psnr(row: dict) -> float | None:
    """The highest held-out PSNR a row reached within its budget (``None`` without a PSNR curve)."""
    return max((point[2] for point in row.get("curve", [])), default=None)


def target_psnr(
    rows: list[dict],
    floor: float | None = None,
    fraction: float | None = None,
    methods: tuple[str, ...] = MAE_FAMILY,
) -> float | None:
    """The PSNR whose first crossing times each method.

    Without ``fraction``: the highest PSNR that every row of ``methods`` reaches, the lowest of their best PSNRs.
    With it: ``floor + fraction * (lowest best - floor)``, where ``floor`` is the highest trivial floor (the
    visible-mean fills): above both floors, so reaching it needs learning, and below every run's peak, so the time
    is not set by one run's noisy best. ``None`` when some run never gets above the floor.
    """
    bests = [best_psnr(r) for r in rows if r["method"] in methods]
    bests = [b for b in bests if b is not None]
    if not bests:
        return None
    lowest = min(bests)
    if fraction is None:
        return lowest
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    if floor is None:
        raise ValueError("A target between the floor and the runs' peaks needs the floor PSNR.")
    return floor + fraction * (lowest - floor) if lowest > floor else None


def first_reach(curve: list, target: float) -> tuple[float | None, int | None]:
    """``(train_seconds, step)`` at which the PSNR curve first reaches ``target``, or ``(None, None)``.

    Between the last evaluation below the target and the first at or above it, the crossing is interpolated
    linearly (in seconds and in steps), so the time's resolution is not the spacing of the evaluations.
    """
    previous = None
    for seconds, step, value in curve:
        if value >= target:
            if previous is None or previous[2] >= value:
                return seconds, step
            share = (target - previous[2]) / (value - previous[2])
            return previous[0] + share * (seconds - previous[0]), round(previous[1] + share * (step - previous[1]))
        previous = (seconds, step, value)
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


def seeded_speedup(
    rows: list[dict], method: str = "lmd-cs", references: tuple[str, ...] = MAE_REFERENCES
) -> dict | None:
    """``method``'s time to the target over each MAE reference's, seed by seed, with the median and the range.

    The headline ``reference`` is the MAE that reaches the target sooner (median over seeds): the comparison is
    against the stronger peer. Each per-seed entry is :func:`speedup` of the rows with that ``seed``.
    """
    seeds = sorted({r.get("seed", 0) for r in rows if r["method"] == method})
    summaries = {}
    for reference in references:
        per_seed = []
        for seed in seeds:
            pair = [r for r in rows if r.get("seed", 0) == seed and r["method"] in (method, reference)]
            ratio = speedup(pair, method, reference)
            if ratio is not None:
                per_seed.append({"seed": seed, **ratio})
        if not per_seed:
            continue
        times = [r["time_ratio"] for r in per_seed]
        reference_times = [
            r["time_to_target_s"] for r in rows if r["method"] == reference and r.get("time_to_target_s") is not None
        ]
        summaries[reference] = {
            "method": method,
            "reference": reference,
            "time_ratio": statistics.median(times),
            "time_ratio_range": [min(times), max(times)],
            "steps_ratio": statistics.median(r["steps_ratio"] for r in per_seed),
            "step_cost_ratio": statistics.median(r["step_cost_ratio"] for r in per_seed),
            "meets_one_third": statistics.median(times) <= 1 / 3,
            "num_seeds": len(per_seed),
            "reference_median_time_s": statistics.median(reference_times) if reference_times else None,
            "per_seed": per_seed,
        }
    if not summaries:
        return None
    headline = min(summaries.values(), key=lambda s: s["reference_median_time_s"])
    return {**headline, "other_references": {k: v for k, v in summaries.items() if k != headline["reference"]}}
