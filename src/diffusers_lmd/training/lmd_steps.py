"""Per-step pieces of the LMD training loop: the step's generator, statistics across ranks, the stop on a NaN loss,
and what a run returns."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..evaluation import ReconstructionMetrics
from .checkpointing import list_checkpoints
from .runtime import NonFiniteLossError


@dataclass
class LMDTrainingResult:
    """What :func:`~diffusers_lmd.training.lmd_trainer.train_lmd` did.

    Args:
        output_dir: the folder holding the saved pipeline.
        global_step: optimiser steps completed (the total, including steps before a resume).
        final_loss: the loss of the last step.
        eval: the held-out evaluation of the saved model.
        train_seconds: wall-clock seconds of this process's training loop.
        epoch_seconds: wall-clock seconds of each complete epoch run in this process.
        epoch_cpu_seconds: CPU seconds this process spent on each of those epochs (less sensitive to other load).
        cache_seconds / cache_reused: time spent building or opening the latent cache, and whether it existed.
    """

    output_dir: str
    global_step: int
    final_loss: float | None
    eval: ReconstructionMetrics | None
    train_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_cpu_seconds: list[float] = field(default_factory=list)
    cache_seconds: float | None = None
    cache_reused: bool | None = None


def step_generator(seed: int, step: int, micro_step: int, rank: int) -> torch.Generator:
    """A CPU generator for one micro-batch's flips and mask, the same on a resumed run."""
    state = np.random.SeedSequence([seed, step, micro_step, rank]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def tracker_config(args: argparse.Namespace) -> dict:
    """Flags as tracker hyper-parameters (TensorBoard takes numbers, strings and booleans only)."""
    return {
        k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items() if k != "hub_token"
    }


def gather_step_stats(accelerator, loss: torch.Tensor, mask_ratio: float) -> tuple[float, list[float]]:
    """The loss averaged over ranks, and every rank's mask ratio (one collective for both)."""
    if accelerator.num_processes == 1:
        return loss.detach().item(), [mask_ratio]
    local = torch.stack([loss.detach().double(), torch.tensor(mask_ratio, dtype=torch.float64, device=loss.device)])
    stats = accelerator.gather(local[None]).reshape(-1, 2).cpu()
    return stats[:, 0].mean().item(), stats[:, 1].tolist()


def check_finite_loss(
    loss: float, step: int, mask_ratio: float, lr: float, output_dir: str, latents: torch.Tensor | None = None
) -> None:
    """Raise :class:`NonFiniteLossError` for a NaN or infinite ``loss``, saying what to do.

    Only then are this rank's ``latents`` read back (the model does not check them on the training step, to spare
    the host-device sync): NaN latents point at the projector rather than the optimisation.
    """
    if math.isfinite(loss):
        return
    checkpoints = list_checkpoints(output_dir)
    last = f"the last good checkpoint, {checkpoints[-1][1]}, is intact" if checkpoints else "no checkpoint was saved"
    where = f"The training loss became {loss} at step {step + 1} (mask ratio {mask_ratio:.3f}, lr {lr:.3g})"
    if latents is not None and not torch.isfinite(latents).all():
        raise NonFiniteLossError(
            f"{where} because this batch's latents hold NaN or infinite values ({latents.dtype}): the projector "
            f"overflows or its scaling_factor is wrong. The run stopped before updating the weights and {last}. "
            "Keep the projector in fp32 (--upcast_projector) or use --mixed_precision bf16/no, check its "
            "scaling_factor (--estimate_latent_stats), then resume with --resume_from_checkpoint latest."
        )
    raise NonFiniteLossError(
        f"{where}; the run stopped before updating the weights and {last}. Lower --learning_rate, raise "
        "--lr_warmup_steps, set --max_grad_norm, or use --mixed_precision bf16/no, then resume with "
        "--resume_from_checkpoint latest."
    )
