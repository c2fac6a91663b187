"""``LMDMaskScheduler``: the rising mask ratio of LMD training (method.md §3) and progressive unmasking
(method.md §4)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_amused import gumbel_noise
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..masking import keep_visible

RISING_SCHEDULES = ("cosine", "piecewise", "uniform", "constant")  # deterministic, non-decreasing in the step
MASK_SCHEDULES = (*RISING_SCHEDULES, "truncnorm")
TRUNCNORM_STD = 0.25  # MAR's spread of the mask-ratio draw around its mean, mask_ratio_max


@dataclass
class LMDMaskSchedulerOutput(BaseOutput):
    """Output of :meth:`LMDMaskScheduler.step`.

    Args:
        prev_sample: the latent after this step: visible tokens unchanged, every other position predicted.
        mask: the token mask after this step (``B x L``, 1 = still masked).
    """

    prev_sample: torch.Tensor
    mask: torch.Tensor


class LMDMaskScheduler(SchedulerMixin, ConfigMixin):
    """Mask-ratio schedule for training, and the reveal order for generation by progressive unmasking.

    Training: :meth:`get_mask_ratio` maps the global optimiser step to a ratio rising from
    ``mask_ratio_min`` to ``mask_ratio_max``, a pure function of the step, so a resumed run continues the
    same curve. Generative models, which start sampling from a fully masked latent, train with ratios up to
    1: ``truncnorm`` draws each step's ratio as MAR does (a normal of mean ``mask_ratio_max`` and std 0.25,
    truncated to ``[mask_ratio_min, mask_ratio_max]``, e.g. ``[0.7, 1.0]``), a pure function of (seed, step).
    Inference: :meth:`set_timesteps` then :meth:`step` reveal masked tokens over ``num_inference_steps`` steps
    along a cosine curve, the last step revealing all.

    Args:
        schedule: ``cosine`` (paper default), ``piecewise``, ``uniform``, ``constant`` (MAE's fixed ratio) or
            ``truncnorm`` (MAR's random ratio).
        mask_ratio_min: ratio at step 0 (``truncnorm``: the lowest ratio drawn).
        mask_ratio_max: ratio reached at the end of the rise (the ``constant`` value; ``truncnorm``: the highest
            ratio drawn and the mean of the draw); at most 1.
        num_train_steps: total optimiser steps ``S`` when :meth:`get_mask_ratio` is not given ``total_steps``.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        schedule: str = "cosine",
        mask_ratio_min: float = 0.15,
        mask_ratio_max: float = 0.75,
        num_train_steps: int = 1000,
    ):
        if schedule not in MASK_SCHEDULES:
            raise ValueError(f"schedule must be one of {MASK_SCHEDULES}, got {schedule!r}.")
        if not 0.0 <= mask_ratio_min <= mask_ratio_max <= 1.0:
            raise ValueError(
                f"Need 0 <= mask_ratio_min <= mask_ratio_max <= 1, got {mask_ratio_min} and {mask_ratio_max}."
            )
        if num_train_steps < 1:
            raise ValueError(f"num_train_steps must be at least 1, got {num_train_steps}.")
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.long)

    # ------------------------------------------------------------------ training
    def get_mask_ratio(self, step: int, total_steps: int | None = None, seed: int = 0) -> float:
        """The mask ratio at optimiser ``step`` of ``total_steps`` (default ``num_train_steps``); ``seed`` seeds the
        ``truncnorm`` draw, which depends on (seed, step) only."""
        total = self.config.num_train_steps if total_steps is None else total_steps
        if total < 1:
            raise ValueError(f"total_steps must be at least 1, got {total}.")
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}.")
        r_min, r_max = self.config.mask_ratio_min, self.config.mask_ratio_max
        s = min(step, total)
        schedule = self.config.schedule
        if schedule == "constant":
            return r_max
        if schedule == "truncnorm":
            return _truncnorm_ratio(seed, step, r_min, r_max)
        if schedule == "uniform":
            return r_min + (r_max - r_min) * s / total
        if schedule == "piecewise":
            return _piecewise_ratio(s, total, r_min, r_max)
        return _cosine_ratio(s, total, r_min, r_max)

    # ----------------------------------------------------------------- inference
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Prepare ``num_inference_steps`` unmasking steps; ``timesteps`` counts down to 0 as in diffusers."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}.")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)

    def masked_fraction(self, timestep: int) -> float:
        """Share of the initially masked tokens still masked after the step at ``timestep`` (cosine, 0 at the end)."""
        n = self._require_timesteps()
        done = n - int(timestep)  # steps completed after this one
        return math.cos(math.pi / 2 * done / n)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *args,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> LMDMaskSchedulerOutput | tuple:
        """Reveal a share of the masked tokens, chosen uniformly at random, taking the model's prediction.

        Called as diffusers' schedulers are, with the extras as keywords:
        ``scheduler.step(model_output, t, sample, mask=mask, generator=generator)``.

        Args:
            model_output: the model's predicted latent, ``B x C x H x W``.
            timestep: the current entry of ``timesteps``.
            sample: the current latent; its visible tokens are kept exactly.
            mask: the current token mask, ``B x L`` (1 = masked); required. Passing it positionally after
                ``sample`` (the old signature) still works, with a ``FutureWarning``.
            generator: makes the reveal order reproducible; one per image (a list) makes a batch reveal what
                single-image calls reveal.
            return_dict: return a :class:`LMDMaskSchedulerOutput` rather than a tuple.
        """
        if args:
            mask, generator, return_dict = _positional_step_args(args, mask, generator, return_dict)
        if mask is None:
            raise ValueError("LMDMaskScheduler.step needs the current token mask: pass mask=... (B x L, 1 = masked).")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} differ.")
        patch_size = _patch_size_from(mask, *sample.shape[2:])
        new_mask = self.reveal(timestep, mask, generator)
        prev_sample = keep_visible(sample, model_output, mask.float(), patch_size)
        if not return_dict:
            return prev_sample, new_mask
        return LMDMaskSchedulerOutput(prev_sample=prev_sample, mask=new_mask)

    def reveal(
        self,
        timestep: int | torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        confidence: torch.Tensor | None = None,
        choice_temperature: float = 0.0,
    ) -> torch.Tensor:
        """The mask after the step at ``timestep``: which masked tokens stay masked, chosen uniformly at random, or,
        given each token's ``confidence``, the least confident ones (MaskGIT's re-masking).

        :meth:`step` reveals with this; a sampler that draws only the tokens it reveals (the diffusion head)
        calls it first and then fills in the tokens it turned from 1 to 0; one that draws every masked token first
        (the categorical head) passes their confidence. With a list of generators, as diffusers' ``randn_tensor``
        takes, row ``i`` is drawn from generator ``i``. How many stay masked does not depend on the confidence.

        Args:
            confidence: ``B x L`` scores (e.g. the log-probability of the drawn codes); the lowest stay masked.
            choice_temperature: with ``confidence``, MaskGIT's randomness of the choice: the scores get diffusers'
                ``gumbel_noise`` times ``choice_temperature * t / n`` (``t`` = ``timestep`` of ``n`` steps), annealed
                to 0 at the last step.
        """
        if isinstance(generator, list):
            if len(generator) != mask.shape[0]:
                raise ValueError(f"Got {len(generator)} generators for {mask.shape[0]} masks: pass one per mask.")
            rows = [None if confidence is None else confidence[i : i + 1] for i in range(mask.shape[0])]
            return torch.cat(
                [
                    self.reveal(timestep, mask[i : i + 1], g, rows[i], choice_temperature)
                    for i, g in enumerate(generator)
                ]
            )
        n = self._require_timesteps()
        t = int(timestep)
        if not 0 <= t < n:
            raise ValueError(f"timestep {t} is outside the {n} steps set by set_timesteps.")
        mask = mask.float()
        # Keep masked the share of currently-masked tokens that the cosine curve says survives this step.
        before = 1.0 if t == n - 1 else self.masked_fraction(t + 1)
        keep_share = self.masked_fraction(t) / before if before > 0 else 0.0
        still_masked = torch.floor(mask.sum(dim=1) * keep_share)
        if confidence is None:
            noise_device = generator.device if generator is not None else torch.device("cpu")
            scores = torch.rand(mask.shape, generator=generator, device=noise_device).to(mask.device)
        else:
            if confidence.shape != mask.shape:
                raise ValueError(f"confidence {tuple(confidence.shape)} must match the mask {tuple(mask.shape)}.")
            if choice_temperature < 0:
                raise ValueError(f"choice_temperature must be >= 0, got {choice_temperature}.")
            scores = confidence.float().to(mask.device)
            if choice_temperature > 0 and t > 0:
                scores = scores + choice_temperature * t / n * gumbel_noise(scores, generator)
        scores = torch.where(mask > 0, scores, torch.full_like(scores, math.inf))  # visible never chosen
        ranks = scores.argsort(dim=1).argsort(dim=1)
        return (ranks < still_masked[:, None]).float()

    def _require_timesteps(self) -> int:
        if self.num_inference_steps is None:
            raise ValueError("Call set_timesteps(num_inference_steps) before step().")
        return self.num_inference_steps

    def __len__(self) -> int:
        return self.config.num_train_steps


def _positional_step_args(args: tuple, mask, generator, return_dict) -> tuple:
    """``step(out, t, sample, mask[, generator[, return_dict]])``, the old positional call, mapped to the keywords
    with a ``FutureWarning``; a ``TypeError`` for too many arguments or one given both ways."""
    if len(args) > 3:
        raise TypeError(f"LMDMaskScheduler.step takes at most 6 positional arguments, got {3 + len(args)}.")
    if mask is not None or (len(args) > 1 and generator is not None):
        raise TypeError("LMDMaskScheduler.step got mask (or generator) both positionally and as a keyword.")
    warnings.warn(
        "Passing mask (and generator, return_dict) positionally to LMDMaskScheduler.step is deprecated and will be "
        "removed in diffusers-lmd 0.2: call step(model_output, timestep, sample, mask=mask, generator=generator).",
        FutureWarning,
        stacklevel=3,
    )
    positional = list(args) + [generator, return_dict][len(args) - 1 :]
    return positional[0], positional[1], positional[2]


def _piecewise_ratio(s: int, total: int, r_min: float, r_max: float, plateau: float = 0.4) -> float:
    """Paper §3.2.3: rise to 0.4 over the first sixth, hold to a third, rise to ``r_max`` by two thirds."""
    if s < total / 6:
        return r_min + (plateau - r_min) * s / (total / 6)
    if s < total / 3:
        return plateau
    if s < 2 * total / 3:
        return plateau + (r_max - plateau) * (s - total / 3) / (total / 3)
    return r_max


def _truncnorm_ratio(seed: int, step: int, r_min: float, r_max: float) -> float:
    """MAR's draw: a normal of mean ``r_max`` and std 0.25 truncated to ``[r_min, r_max]``, by inverting its CDF at a
    uniform seeded by (seed, step) alone, so every process and a resumed run draw the same ratio at a step."""
    if r_min == r_max:
        return r_max
    u = np.random.default_rng(np.random.SeedSequence([seed, step])).random()
    lo, hi = (torch.tensor([r_min, r_max], dtype=torch.float64) - r_max) / TRUNCNORM_STD
    cdf_lo, cdf_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
    z = torch.special.ndtri(cdf_lo + u * (cdf_hi - cdf_lo))
    return float(min(max(r_max + TRUNCNORM_STD * z.item(), r_min), r_max))


def _cosine_ratio(s: int, total: int, r_min: float, r_max: float) -> float:
    """Paper default: ``r_min + (r_max - r_min)(1 - g(t)/g(0))`` with the iDDPM cosine ``g``, flat after ``2S/3``."""
    horizon = (2 * total) // 3
    if horizon == 0 or s >= horizon:
        return r_max

    def g(t: float) -> float:
        return math.cos(((t / horizon) + 0.008) / 1.008 * math.pi / 2) ** 2

    return r_min + (r_max - r_min) * (1.0 - g(s) / g(0))


def _patch_size_from(mask: torch.Tensor, height: int, width: int) -> int:
    """Infer the patch side from a ``B x L`` mask over an ``H x W`` latent."""
    patch_size = round(math.sqrt(height * width / max(mask.shape[1], 1)))
    if patch_size < 1 or (height // patch_size) * (width // patch_size) != mask.shape[1]:
        raise ValueError(f"A mask of {mask.shape[1]} tokens does not tile a {height}x{width} latent in square patches.")
    return patch_size
