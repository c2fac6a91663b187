"""Train one method of the efficiency benchmark for a wall-clock budget and score it like every other method.

Training is :class:`~lmd_bench.budget.BudgetLoop`'s (the clock, optimiser, batch order and flips every method
shares). PSNR is measured at evenly spaced points of training time, and at time 0, on the fixed seeded evaluation
masks of ``diffusers_lmd.evaluation``.
"""

from __future__ import annotations

import resource

import torch

from diffusers_lmd.evaluation import eval_batches, masked_patch_mse
from diffusers_lmd.metrics import psnr
from diffusers_lmd.projector import downsample_factor, encode_images

from .budget import DEFAULT_RUN, BudgetLoop, RunSettings
from .data import BenchmarkData
from .efficiency_methods import EfficiencyMethod
from .efficiency_presets import EfficiencyPreset


@torch.no_grad()
def evaluate_psnr(method: EfficiencyMethod, images: torch.Tensor, batch_size: int = 32) -> float:
    """Mean per-image PSNR of ``method``'s reconstructions of ``images`` under the fixed 0.75 evaluation masks."""
    was_training = method.model.training
    method.model.eval()
    scores = []
    try:
        for batch, mask in eval_batches(images, method.token_pixels, batch_size):
            scores.append(psnr(method.reconstruct(batch, mask).float(), batch.float()).cpu())
    finally:
        method.model.train(was_training)
    return float(torch.cat(scores).mean())


@torch.no_grad()
def masked_latent_mse(method: EfficiencyMethod, images: torch.Tensor, batch_size: int = 32) -> float | None:
    """A latent method's mean squared error on the masked latent patches of ``images`` (``None`` for others).

    Read it beside :func:`~diffusers_lmd.evaluation.latent_reference_psnr`'s ``mean_latent_mse``: it shows how much
    better than "predict the mean" the method is in the space it is trained in, whatever the projector's decoder
    makes of it.
    """
    vae = getattr(method, "vae", None)
    if vae is None or not method.reconstructs:
        return None
    was_training = method.model.training
    method.model.eval()
    patch_size = method.token_pixels // downsample_factor(vae)
    errors = []
    try:
        for batch, mask in eval_batches(images, method.token_pixels, batch_size):
            latents = encode_images(vae, batch)
            errors.append(masked_patch_mse(method.predict_latents(latents, mask), latents, mask, patch_size).cpu())
    finally:
        method.model.train(was_training)
    return float(torch.cat(errors).mean())


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory, or on CPU the process's peak resident set (one method per process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train_for_budget(
    method: EfficiencyMethod,
    data: BenchmarkData,
    preset: EfficiencyPreset,
    run: RunSettings = DEFAULT_RUN,
) -> dict:
    """Train ``method`` for ``preset.budget_s`` seconds of training time; return its benchmark row.

    ``run`` says the device, the seed and the clock (:class:`~lmd_bench.budget.RunSettings`).
    The row holds ``method, steps, mit_s, mli, mlt_s, final_psnr, peak_mem_mb``, ``final_train_psnr`` (the same
    score on :meth:`BenchmarkData.train_probe`, images the method trained on) and, for the plots,
    ``curve`` (``[train_seconds, step, psnr]`` at each evaluation) and ``losses`` (``[step, train_seconds,
    loss, mask_ratio]``). ``time_to_target_s`` is added by :func:`lmd_bench.efficiency_results.add_time_to_target`
    once every method's curve is known. Undefined metrics (no PSNR, no loss-decrease event) are ``None``.
    """
    loop = BudgetLoop(method, data, preset, run)
    device, eval_images = loop.device, loop.data.eval_images
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    curve, eval_times = [], []
    if method.reconstructs:
        curve.append([0.0, 0, evaluate_psnr(method, eval_images)])
        eval_times = [preset.budget_s * k / preset.num_evals for k in range(1, preset.num_evals + 1)]

    def evaluate(train_seconds: float, step: int) -> None:
        curve.append([round(train_seconds, 4), step, evaluate_psnr(method, eval_images)])

    def step_loss(batch: torch.Tensor, indices: torch.Tensor, progress: float) -> torch.Tensor:
        return method.training_loss(batch, progress, loop.generator)

    loop.run(step_loss, eval_times, evaluate, mask_ratio=method.mask_ratio)
    return {
        "method": method.name,
        "seed": run.seed,
        "learning_rate": loop.learning_rate,
        **loop.efficiency(),
        "final_psnr": curve[-1][2] if curve else None,
        "final_train_psnr": evaluate_psnr(method, loop.data.train_probe()) if method.reconstructs else None,
        "eval_latent_mse": masked_latent_mse(method, eval_images),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "loss_events": loop.tracker.num_events,
        "train_s": round(loop.elapsed, 3),
        "clock": run.clock,
        "params_m": loop.params_m(),
        "space": method.space,
        "load_avg": loop.load_avg(),
        "curve": curve,
        "losses": loop.logged_losses(),
    }
