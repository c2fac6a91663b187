"""Training-efficiency metrics of the LMD paper (method.md §5) and PSNR (``diffusers_lmd.metrics`` re-exports them).

The paper's appendix defining them is lost; method.md §5 fixes them as follows.

- MIT, mean iteration time: wall-clock seconds per optimiser step, averaged after a warm-up.
- A *loss-decrease event*: the EMA-smoothed training loss reaches a new low at least a relative ``delta``
  below the previous event's value. The first logged step is the origin (the first "event").
- MLI: mean number of steps between consecutive events (origin included). MLT = MIT x MLI.
- MAT@k: mean wall-clock seconds between consecutive improvements of top-k validation accuracy.
- Overall mean: the mean of MIT, MLT, MLI, MAT@1 and MAT@5 (paper Table 5).

A run with no event after its origin has an infinite MLI (the loss never decreased by ``delta``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

DEFAULT_EMA_DECAY = 0.9
DEFAULT_DELTA = 0.01
DEFAULT_WARMUP_STEPS = 5


def _check_finite(values: Sequence[float], name: str) -> None:
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise ValueError(f"{name}[{i}] is {v}: metrics need finite values (stop training on NaN loss first).")


def _check_ema_decay(ema_decay: float) -> None:
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}.")


def _check_delta(delta: float) -> None:
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta (the relative decrease that counts as an event) must lie in [0, 1), got {delta}.")


def ema_smooth(values: Sequence[float], ema_decay: float = DEFAULT_EMA_DECAY) -> list[float]:
    """Exponential moving average started at the first value: ``s_0 = v_0``, ``s_t = a s_(t-1) + (1 - a) v_t``."""
    _check_ema_decay(ema_decay)
    _check_finite(values, "values")
    smoothed: list[float] = []
    for v in values:
        smoothed.append(float(v) if not smoothed else ema_decay * smoothed[-1] + (1.0 - ema_decay) * float(v))
    return smoothed


def _is_decrease(value: float, reference: float, delta: float) -> bool:
    """``value`` is at least ``delta`` (relative) below ``reference``; ``|reference|`` keeps it sign-safe."""
    return value <= reference - delta * abs(reference) and value < reference


def loss_decrease_events(
    losses: Sequence[float], delta: float = DEFAULT_DELTA, ema_decay: float = DEFAULT_EMA_DECAY
) -> list[int]:
    """Indices of the loss-decrease events of a per-step loss curve, the origin (index 0) first.

    Returns ``[]`` for an empty curve.
    """
    _check_delta(delta)
    smoothed = ema_smooth(losses, ema_decay)
    if not smoothed:
        return []
    events, reference = [0], smoothed[0]
    for step, value in enumerate(smoothed[1:], start=1):
        if _is_decrease(value, reference, delta):
            events.append(step)
            reference = value
    return events


def _mean_gap(events: Sequence[float]) -> float:
    """Mean gap between consecutive entries (``inf`` when there is fewer than one gap)."""
    if len(events) < 2:
        return math.inf
    return (events[-1] - events[0]) / (len(events) - 1)


def mean_loss_decrease_iterations(
    losses: Sequence[float], delta: float = DEFAULT_DELTA, ema_decay: float = DEFAULT_EMA_DECAY
) -> float:
    """MLI: mean optimiser steps between consecutive loss-decrease events (``inf`` with none)."""
    return _mean_gap(loss_decrease_events(losses, delta, ema_decay))


def mean_iteration_time(step_times: Sequence[float], warmup_steps: int = DEFAULT_WARMUP_STEPS) -> float:
    """MIT: mean of the per-step wall-clock durations (seconds) after the first ``warmup_steps``."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}.")
    _check_finite(step_times, "step_times")
    timed = list(step_times)[warmup_steps:]
    if not timed:
        raise ValueError(
            f"MIT needs more than warmup_steps={warmup_steps} steps, got {len(step_times)}: "
            "train longer or lower warmup_steps."
        )
    if min(timed) < 0:
        raise ValueError("step_times must be durations (non-negative seconds), not timestamps.")
    return sum(timed) / len(timed)


def mean_loss_decrease_time(mit: float, mli: float) -> float:
    """MLT = MIT x MLI: mean wall-clock seconds between loss-decrease events."""
    return mit * mli


def accuracy_increase_events(accuracies: Sequence[float], min_delta: float = 0.0) -> list[int]:
    """Indices where validation accuracy beats the best so far by more than ``min_delta``, the origin first."""
    _check_finite(accuracies, "accuracies")
    if not accuracies:
        return []
    events, best = [0], float(accuracies[0])
    for i, acc in enumerate(accuracies[1:], start=1):
        if acc > best + min_delta:
            events.append(i)
            best = float(acc)
    return events


def mean_accuracy_increase_time(times: Sequence[float], accuracies: Sequence[float], min_delta: float = 0.0) -> float:
    """MAT@k: mean wall-clock seconds between consecutive improvements of a top-k accuracy curve.

    Args:
        times: wall-clock seconds (since the start of fine-tuning) at which each accuracy was measured.
        accuracies: the top-k validation accuracy at those times (``inf`` is returned if it never improves).
        min_delta: an improvement must exceed the best so far by more than this.
    """
    if len(times) != len(accuracies):
        raise ValueError(f"times and accuracies must have the same length, got {len(times)} and {len(accuracies)}.")
    _check_finite(times, "times")
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("times must be non-decreasing wall-clock seconds.")
    return _mean_gap([float(times[i]) for i in accuracy_increase_events(accuracies, min_delta)])


def overall_mean(mit: float, mlt: float, mli: float, mat_at_1: float, mat_at_5: float) -> float:
    """The "Overall mean" column of paper Table 5: the plain mean of the five metrics."""
    return (mit + mlt + mli + mat_at_1 + mat_at_5) / 5.0


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB over whole images (``B x C x H x W``); ``data_range`` 2.0 for images in [-1, 1].

    Returns a ``B`` tensor; take ``.mean()`` for the dataset figure. Identical images give ``inf``.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape.")
    if prediction.ndim != 4:
        raise ValueError(f"psnr expects B x C x H x W images, got shape {tuple(prediction.shape)}.")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}.")
    mse = (prediction.double() - target.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


class EfficiencyTracker:
    """Streaming MIT / MLI / MLT for a training loop: call :meth:`update` once per optimiser step.

    Gives the same numbers as the functions above on the same curve, in O(1) memory, and survives a resume
    through :meth:`state_dict` / :meth:`load_state_dict` (store it in the checkpoint). In a training loop::

        tracker = EfficiencyTracker()
        tracker.restart_clock()
        for batch in loader:
            loss = train_step(batch)
            tracker.update(loss.item())  # times the step since the last restart_clock()/update()
            logger.log({"loss": loss.item(), **tracker.summary()})  # mit_s, mli, mlt_s, loss_events
            maybe_validate_and_checkpoint()
            tracker.restart_clock()  # validation and checkpoints are not step time

    Args:
        ema_decay: smoothing of the loss before event detection.
        delta: relative decrease that counts as a loss-decrease event.
        warmup_steps: steps whose duration MIT ignores (compilation, allocator and cache warm-up).
    """

    def __init__(
        self,
        ema_decay: float = DEFAULT_EMA_DECAY,
        delta: float = DEFAULT_DELTA,
        warmup_steps: int = DEFAULT_WARMUP_STEPS,
    ):
        _check_ema_decay(ema_decay)
        _check_delta(delta)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}.")
        self.ema_decay, self.delta, self.warmup_steps = ema_decay, delta, warmup_steps
        self.steps = 0
        self.smoothed: float | None = None
        self.reference: float | None = None
        self.first_event_step = 0
        self.last_event_step = 0
        self.num_events = 0  # events after the origin
        self.timed_steps = 0
        self.timed_seconds = 0.0
        self._last_update: float | None = None

    def update(self, loss: float, step_time: float | None = None) -> bool:
        """Record one optimiser step; returns True when it is a loss-decrease event.

        ``step_time`` is the step's wall-clock duration in seconds; when omitted, the time since the previous
        :meth:`update` call is used (so the first call of a run contributes no duration).
        """
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"loss is {loss} at step {self.steps}: stop training on a non-finite loss.")
        now = time.perf_counter()
        if step_time is None and self._last_update is not None:
            step_time = now - self._last_update
        self._last_update = now
        if step_time is not None and self.steps >= self.warmup_steps:
            self.timed_steps += 1
            self.timed_seconds += float(step_time)

        step, self.steps = self.steps, self.steps + 1
        if self.smoothed is None:
            self.smoothed = self.reference = loss
            self.first_event_step = self.last_event_step = step
            return False
        self.smoothed = self.ema_decay * self.smoothed + (1.0 - self.ema_decay) * loss
        if _is_decrease(self.smoothed, self.reference, self.delta):
            self.reference, self.last_event_step = self.smoothed, step
            self.num_events += 1
            return True
        return False

    def restart_clock(self) -> None:
        """Start timing the next step now: call after work that is not a training step (validation, checkpoints,
        logging), so that the next :meth:`update` without ``step_time`` measures the step alone."""
        self._last_update = time.perf_counter()

    @property
    def mit(self) -> float | None:
        """Mean seconds per step after warm-up, ``None`` until a timed step exists."""
        return self.timed_seconds / self.timed_steps if self.timed_steps else None

    @property
    def mli(self) -> float:
        """Mean steps between loss-decrease events (``inf`` before the first event)."""
        if self.num_events == 0:
            return math.inf
        return (self.last_event_step - self.first_event_step) / self.num_events

    @property
    def mlt(self) -> float | None:
        """MIT x MLI in seconds, ``None`` while MIT is undefined."""
        mit = self.mit
        return None if mit is None else mean_loss_decrease_time(mit, self.mli)

    def summary(self) -> dict[str, float]:
        """The metrics defined so far, ready for a logger: ``mit_s``, ``mli``, ``mlt_s``, ``loss_events``."""
        logs: dict[str, float] = {"loss_events": float(self.num_events)}
        if self.mit is not None:
            logs["mit_s"] = self.mit
        if math.isfinite(self.mli):
            logs["mli"] = self.mli
            if self.mlt is not None:
                logs["mlt_s"] = self.mlt
        return logs

    def state_dict(self) -> dict[str, float | int | None]:
        """Everything needed to continue the same metrics after a resume (JSON-serialisable)."""
        keys = ("steps", "smoothed", "reference", "first_event_step", "last_event_step", "num_events")
        return {k: getattr(self, k) for k in keys + ("timed_steps", "timed_seconds")}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; the step after a resume is timed from its own ``update`` call on."""
        for key, value in state.items():
            if not hasattr(self, key) or key.startswith("_"):
                raise ValueError(f"Unknown EfficiencyTracker state key {key!r}.")
            setattr(self, key, value)
        self._last_update = None
