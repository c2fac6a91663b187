"""Train one method for a wall-clock budget and score it the same way as every other method.

The clock counts training steps only (data indexing, forward, backward, optimiser, and the loss read-back that
synchronises the device); held-out evaluations pause it. Every method gets the same optimiser (AdamW, MAE's
betas and weight decay, constant rate after a linear warm-up), batch order, flips and budget. PSNR is measured
at evenly spaced points of training time on the fixed seeded evaluation masks of ``diffusers_lmd.evaluation``.

``clock="cpu"`` measures the process's CPU seconds instead of elapsed seconds: on a CPU shared with other jobs,
a single-threaded run then measures the work each method does rather than how much of the machine it got.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
from contextlib import nullcontext

import torch

from diffusers_lmd.evaluation import eval_batches, masked_patch_mse
from diffusers_lmd.metrics import EfficiencyTracker, psnr
from diffusers_lmd.projector import downsample_factor, encode_images
from diffusers_lmd.training.args import add_training_args
from diffusers_lmd.training.optim import build_lr_scheduler, build_optimizer

from .data import BenchmarkData, EpochSampler
from .efficiency_methods import EfficiencyMethod
from .efficiency_presets import EfficiencyPreset

# Losses kept for the loss-curve plot: every step up to this many, then evenly thinned.
MAX_LOGGED_LOSSES = 2000


def optimizer_args(preset: EfficiencyPreset, method: str | None = None) -> argparse.Namespace:
    """The shared training flags' defaults (AdamW 0.9/0.95, weight decay 0.05, clip 1.0) with the method's rate."""
    args = add_training_args(argparse.ArgumentParser()).parse_args([])
    args.learning_rate = preset.learning_rate if method is None else preset.learning_rate_for(method)
    args.lr_scheduler = "constant_with_warmup"
    args.lr_warmup_steps = preset.lr_warmup_steps
    return args


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


def _thin(points: list, limit: int) -> list:
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _autocast(device: torch.device, mixed_precision: str | None):
    if mixed_precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def train_for_budget(
    method: EfficiencyMethod,
    data: BenchmarkData,
    preset: EfficiencyPreset,
    device: torch.device | str = "cpu",
    seed: int = 0,
    clock: str = "wall",
) -> dict:
    """Train ``method`` for ``preset.budget_s`` seconds of training time; return its benchmark row.

    ``clock`` is ``"wall"`` (elapsed seconds) or ``"cpu"`` (the process's CPU seconds, CPU training only).
    The row holds ``method, steps, mit_s, mli, mlt_s, final_psnr, peak_mem_mb``, ``final_train_psnr`` (the same
    score on :meth:`BenchmarkData.train_probe`, images the method trained on) and, for the plots,
    ``curve`` (``[train_seconds, step, psnr]`` at each evaluation) and ``losses`` (``[step, train_seconds,
    loss, mask_ratio]``). ``time_to_target_s`` is added by :func:`lmd_bench.efficiency_results.add_time_to_target`
    once every method's curve is known. Undefined metrics (no PSNR, no loss-decrease event) are ``None``.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}.")
    if clock == "cpu" and torch.device(device).type != "cpu":
        raise ValueError("clock='cpu' measures CPU seconds and only makes sense for training on the CPU.")
    now = CLOCKS[clock]
    device = torch.device(device)
    model = method.model.to(device).train()
    data = data.to(device)
    args = optimizer_args(preset, method.name)
    optimizer = build_optimizer(model, args, args.learning_rate)
    lr_scheduler = build_lr_scheduler(optimizer, args, max_train_steps=10**9, num_processes=1)
    sampler = EpochSampler(len(data), preset.train_batch_size, torch.Generator().manual_seed(seed))
    flip_generator = torch.Generator(device).manual_seed(seed + 1)
    mask_generator = torch.Generator(device).manual_seed(seed + 2)
    tracker = EfficiencyTracker(warmup_steps=preset.mit_warmup_steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    eval_times = [preset.budget_s * k / preset.num_evals for k in range(1, preset.num_evals + 1)]
    curve = [[0.0, 0, evaluate_psnr(method, data.eval_images)]] if method.reconstructs else []
    losses, elapsed, next_eval, load_before = [], 0.0, 0, os.getloadavg()[0]

    while elapsed < preset.budget_s:
        start = now()
        progress = elapsed / preset.budget_s
        batch = data.batch(method.space, next(sampler).to(device), flip_generator)
        with _autocast(device, preset.mixed_precision):
            loss = method.training_loss(batch, progress, mask_generator)
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()  # synchronises the device: the step is over
        step_time = now() - start
        elapsed += step_time
        tracker.update(value, step_time)  # raises ValueError on a NaN loss
        losses.append([tracker.steps, round(elapsed, 4), value, method.mask_ratio(progress)])
        if method.reconstructs and next_eval < len(eval_times) and elapsed >= eval_times[next_eval]:
            curve.append([round(elapsed, 4), tracker.steps, evaluate_psnr(method, data.eval_images)])
            while next_eval < len(eval_times) and elapsed >= eval_times[next_eval]:
                next_eval += 1

    return {
        "method": method.name,
        "seed": seed,
        "learning_rate": args.learning_rate,
        "steps": tracker.steps,
        "mit_s": tracker.mit,
        "mli": tracker.mli if math.isfinite(tracker.mli) else None,
        "mlt_s": tracker.mlt if math.isfinite(tracker.mli) else None,
        "final_psnr": curve[-1][2] if curve else None,
        "final_train_psnr": evaluate_psnr(method, data.train_probe()) if method.reconstructs else None,
        "eval_latent_mse": masked_latent_mse(method, data.eval_images),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "loss_events": tracker.num_events,
        "train_s": round(elapsed, 3),
        "clock": clock,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "space": method.space,
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "curve": curve,
        "losses": _thin(losses, MAX_LOGGED_LOSSES),
    }
