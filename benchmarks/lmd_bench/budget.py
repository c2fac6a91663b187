"""One wall-clock training budget: the loop every benchmark method trains in.

The clock counts training steps only (batch indexing, forward, backward, optimiser, the weights' EMA when there is
one, and the loss read-back that synchronises the device); evaluations pause it. Every method gets the same
optimiser (AdamW, MAE's betas and weight decay, constant rate after a linear warm-up), batch order, flips and
budget. A benchmark gives :meth:`BudgetLoop.run` its method's loss and its evaluation; the loop does the rest.

``clock="cpu"`` measures the process's CPU seconds instead of elapsed seconds: on a CPU shared with other jobs,
a single-threaded run then measures the work each method does rather than how much of the machine it got.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import nn

from diffusers_lmd.metrics import EfficiencyTracker
from diffusers_lmd.training import build_ema, build_lr_scheduler, build_optimizer, ema_weights
from diffusers_lmd.training.optim import OptimizerConfig

from .data import BenchmarkData, EpochSampler
from .presets import BudgetPreset

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
# Losses kept for the loss-curve plot: every step up to this many, then evenly thinned.
MAX_LOGGED_LOSSES = 2000


class BudgetMethod(Protocol):
    """What the loop needs of a benchmark method: its row key, its input space and the module it trains."""

    name: str
    space: str
    model: nn.Module


MAX_GRAD_NORM = 1.0  # the training scripts' --max_grad_norm default, for every method


def optimizer_config(preset: BudgetPreset, ema_decay: float | None = None) -> OptimizerConfig:
    """The training scripts' optimiser defaults (AdamW 0.9/0.95, weight decay 0.05, the EMA's warm-up), constant
    after the preset's warm-up; ``ema_decay`` caps the EMA's decay."""
    config = OptimizerConfig(lr_scheduler="constant_with_warmup", lr_warmup_steps=preset.lr_warmup_steps)
    return config if ema_decay is None else replace(config, ema_max_decay=ema_decay)


def autocast(device: torch.device, mixed_precision: str | None):
    """bf16 autocast on CUDA when the preset asks for it, else nothing."""
    if mixed_precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def thin(points: list, limit: int) -> list:
    """At most about ``limit`` evenly spaced ``points``, the last one kept."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


@dataclass(frozen=True)
class RunSettings:
    """Where and how one benchmark run trains, the same for every method: the device, the seed (weights, batch
    order, flips, the method's randomness) and the clock of the budget: ``"wall"`` (elapsed seconds) or ``"cpu"``
    (the process's CPU seconds, for CPU training only)."""

    device: torch.device | str = "cpu"
    seed: int = 0
    clock: str = "wall"

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {self.clock!r}.")
        if self.clock == "cpu" and torch.device(self.device).type != "cpu":
            raise ValueError("clock='cpu' measures CPU seconds and only makes sense for training on the CPU.")


DEFAULT_RUN = RunSettings()  # on the CPU, seed 0, elapsed seconds


class BudgetLoop:
    """One method's training run of ``preset.budget_s`` training seconds on ``data``, in the method's space.

    Built here, the same way for every method: the model on ``run.device`` in train mode, the optimiser and its
    schedule (:func:`optimizer_config`), the batch order (seeded by ``run.seed``), the flips (``seed + 1``), the
    method's own randomness (:attr:`generator`, ``seed + 2``) and, when ``ema_decay > 0``, the weights' EMA
    (``diffusers_lmd.training.build_ema``: diffusers' ``EMAModel`` with warm-up). After :meth:`run`, :attr:`elapsed`,
    :attr:`tracker` (MIT / MLI / MLT) and :attr:`losses` (``[step, train_seconds, loss(, mask_ratio)]``) hold it.
    """

    def __init__(
        self,
        method: BudgetMethod,
        data: BenchmarkData,
        preset: BudgetPreset,
        run: RunSettings = DEFAULT_RUN,
        ema_decay: float = 0.0,
    ):
        seed = run.seed
        self.method, self.preset, self.clock = method, preset, run.clock
        self.device = torch.device(run.device)
        self.model = method.model.to(self.device).train()
        self.data = data.to(self.device)
        config = optimizer_config(preset, ema_decay)
        self.learning_rate, self.max_grad_norm = preset.learning_rate_for(method.name), MAX_GRAD_NORM
        self.optimizer = build_optimizer(self.model, config, self.learning_rate)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, config, max_train_steps=10**9, num_processes=1)
        self.ema = build_ema(self.model, config) if ema_decay else None
        self.sampler = EpochSampler(len(self.data), preset.train_batch_size, torch.Generator().manual_seed(seed))
        self.flip_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.generator = torch.Generator(self.device).manual_seed(seed + 2)
        self.tracker = EfficiencyTracker(warmup_steps=preset.mit_warmup_steps)
        self.elapsed, self.losses, self.load_before = 0.0, [], os.getloadavg()[0]

    def run(
        self,
        step_loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
        eval_times: Sequence[float],
        evaluate: Callable[[float, int], None],
        mask_ratio: Callable[[float], float] | None = None,
    ) -> None:
        """Train until the budget is spent.

        Each step draws the next batch (``indices`` on the device and the batch in the method's space, flipped),
        and ``step_loss(batch, indices, progress)`` returns its scalar loss (``progress``: the share of the budget
        spent). The first time training passes each of ``eval_times``, ``evaluate(train_seconds, step)`` runs
        with the clock paused. ``mask_ratio(progress)``, when given, is logged beside each step's loss.
        """
        now, budget = CLOCKS[self.clock], self.preset.budget_s
        self.load_before = os.getloadavg()[0]
        next_eval = 0
        while self.elapsed < budget:
            start = now()
            progress = self.elapsed / budget
            indices = next(self.sampler).to(self.device)
            batch = self.data.batch(self.method.space, indices, self.flip_generator)
            with autocast(self.device, self.preset.mixed_precision):
                loss = step_loss(batch, indices, progress)
            loss.backward()
            if self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(self.model.parameters())
            value = loss.item()  # synchronises the device: the step is over
            step_time = now() - start
            self.elapsed += step_time
            self.tracker.update(value, step_time)  # raises ValueError on a NaN loss
            logged = [self.tracker.steps, round(self.elapsed, 4), value]
            self.losses.append(logged if mask_ratio is None else [*logged, mask_ratio(progress)])
            if next_eval < len(eval_times) and self.elapsed >= eval_times[next_eval]:
                evaluate(self.elapsed, self.tracker.steps)
                while next_eval < len(eval_times) and self.elapsed >= eval_times[next_eval]:
                    next_eval += 1

    def ema_weights(self):
        """A context in which the model holds its EMA weights (its own without an EMA)."""
        return ema_weights(self.ema, self.model)

    def efficiency(self) -> dict:
        """``steps``, ``mit_s`` and, when a loss-decrease event happened, ``mli`` and ``mlt_s`` (else ``None``)."""
        tracker = self.tracker
        finite = math.isfinite(tracker.mli)
        return {
            "steps": tracker.steps,
            "mit_s": tracker.mit,
            "mli": tracker.mli if finite else None,
            "mlt_s": tracker.mlt if finite else None,
        }

    def params_m(self) -> float:
        """The trained module's parameters, in millions."""
        return round(sum(p.numel() for p in self.model.parameters()) / 1e6, 3)

    def load_avg(self) -> list[float]:
        """The machine's one-minute load average before and after the run."""
        return [round(self.load_before, 2), round(os.getloadavg()[0], 2)]

    def logged_losses(self) -> list:
        """:attr:`losses`, thinned to about :data:`MAX_LOGGED_LOSSES` for the plots."""
        return thin(self.losses, MAX_LOGGED_LOSSES)
