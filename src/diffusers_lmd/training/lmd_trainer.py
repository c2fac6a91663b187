"""The LMD training loop (SPEC §2-§3), shared by ``training/train_lmd.py``, the demo, benchmarks and tests.

Each optimiser step draws the mask ratio from ``LMDMaskScheduler.get_mask_ratio(global_step)``, a pure function
of the step, so every rank uses the same ratio and a resumed run continues the same curve. Masks and flips come
from a generator seeded by (seed, step, micro-batch, rank): a resumed run repeats them exactly.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate.utils import set_seed

from ..data import build_datasets
from ..evaluation import ReconstructionMetrics, evaluate_reconstruction, reconstruction_grid
from ..metrics import EfficiencyTracker
from ..schedulers import LMDMaskScheduler
from .args import effective_learning_rate, total_batch_size
from .checkpointing import list_checkpoints, load_checkpoint, resolve_resume_path, save_checkpoint
from .latent_cache import latents_for_batch
from .lmd_args import check_lmd_args
from .lmd_outputs import LOG_FILE, finish_run
from .lmd_setup import (
    build_accelerator,
    build_lmd_model,
    build_train_dataloader,
    load_projector,
    maybe_estimate_latent_stats,
    place_projector,
)
from .logging import JsonlLogger, ProgressBar, log_images
from .optim import build_ema, build_lr_scheduler, build_optimizer, register_ema_hooks

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stopped without writing anything after it."""


@dataclass
class LMDTrainingResult:
    """What :func:`train_lmd` did.

    Args:
        output_dir: the folder holding the saved pipeline.
        global_step: optimiser steps completed (the total, including steps before a resume).
        final_loss: the loss of the last step.
        eval: the held-out evaluation of the saved model.
        train_seconds: wall-clock seconds of this process's training loop.
        epoch_seconds: wall-clock seconds of each complete epoch run in this process.
        cache_seconds / cache_reused: time spent building or opening the latent cache, and whether it existed.
    """

    output_dir: str
    global_step: int
    final_loss: float | None
    eval: ReconstructionMetrics | None
    train_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    cache_seconds: float | None = None
    cache_reused: bool | None = None


def step_generator(seed: int, step: int, micro_step: int, rank: int) -> torch.Generator:
    """A CPU generator for one micro-batch's flips and mask, the same on a resumed run."""
    state = np.random.SeedSequence([seed, step, micro_step, rank]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _tracker_config(args: argparse.Namespace) -> dict:
    """Flags as tracker hyper-parameters (TensorBoard takes numbers, strings and booleans only)."""
    return {
        k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items() if k != "hub_token"
    }


def _gather_step_stats(accelerator, loss: torch.Tensor, mask_ratio: float) -> tuple[float, list[float]]:
    """The loss averaged over ranks, and every rank's mask ratio (one collective for both)."""
    if accelerator.num_processes == 1:
        return loss.detach().item(), [mask_ratio]
    local = torch.stack([loss.detach().double(), torch.tensor(mask_ratio, dtype=torch.float64, device=loss.device)])
    stats = accelerator.gather(local[None]).reshape(-1, 2).cpu()
    return stats[:, 0].mean().item(), stats[:, 1].tolist()


def _check_finite(loss: float, step: int, mask_ratio: float, lr: float, output_dir: str) -> None:
    if math.isfinite(loss):
        return
    checkpoints = list_checkpoints(output_dir)
    last = f"the last good checkpoint, {checkpoints[-1][1]}, is intact" if checkpoints else "no checkpoint was saved"
    raise NonFiniteLossError(
        f"The training loss became {loss} at step {step + 1} (mask ratio {mask_ratio:.3f}, lr {lr:.3g}); the run "
        f"stopped before updating the weights and {last}. Lower --learning_rate, raise --lr_warmup_steps, set "
        "--max_grad_norm, or use --mixed_precision bf16/no, then resume with --resume_from_checkpoint latest."
    )


def _validate(accelerator, args, model, vae, eval_dataset, step: int, log: JsonlLogger | None) -> ReconstructionMetrics:
    """Held-out PSNR and a reconstruction grid for the trackers (main process)."""
    unwrapped = accelerator.unwrap_model(model)
    metrics = evaluate_reconstruction(
        unwrapped, vae, eval_dataset, batch_size=args.eval_batch_size, max_images=args.max_eval_samples
    )
    accelerator.log({"eval_psnr": metrics.psnr}, step=step)
    if accelerator.trackers:
        log_images(accelerator, "reconstructions", reconstruction_grid(unwrapped, vae, eval_dataset), step)
    if log is not None:
        log.log({"step": step, "eval_psnr": metrics.psnr})
    logger.info("step %d: held-out PSNR %.2f dB", step, metrics.psnr)
    return metrics


def train_lmd(args: argparse.Namespace) -> LMDTrainingResult:
    """Train an ``LMDModel`` on a frozen projector's latents and save an ``LMDPipeline`` to ``args.output_dir``.

    ``args`` comes from :func:`~diffusers_lmd.training.lmd_args.parse_lmd_args`. Raises ``ValueError`` before any
    training for bad flags or a projector that does not load, and :class:`NonFiniteLossError` on a NaN loss.
    """
    check_lmd_args(args)
    vae = load_projector(args.projector_path, args.projector_subfolder)
    accelerator = build_accelerator(args)
    set_seed(args.seed)
    model = build_lmd_model(args, vae)
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)

    train_dataset, eval_dataset = build_datasets(args)
    maybe_estimate_latent_stats(args, vae, train_dataset)
    place_projector(vae, accelerator)
    train_loader, cache = build_train_dataloader(args, accelerator, vae, train_dataset)

    steps_per_epoch = math.ceil(
        math.ceil(len(train_loader) / accelerator.num_processes) / args.gradient_accumulation_steps
    )
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    lr = effective_learning_rate(args, accelerator.num_processes)
    optimizer = build_optimizer(model, args, lr)
    lr_scheduler = build_lr_scheduler(optimizer, args, max_train_steps, accelerator.num_processes)
    mask_scheduler = LMDMaskScheduler(args.mask_schedule, args.mask_ratio_min, args.mask_ratio_max, max_train_steps)
    ema = build_ema(model, args) if args.use_ema else None
    if ema is not None:
        register_ema_hooks(accelerator, ema)
    model, optimizer, train_loader, lr_scheduler = accelerator.prepare(model, optimizer, train_loader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers(args.tracker_project_name or "train_lmd", config=_tracker_config(args))

    global_step = 0
    efficiency = EfficiencyTracker()  # MIT / MLI / MLT (SPEC §5), logged every step
    resume = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
    if resume is not None:
        state = load_checkpoint(accelerator, resume)
        global_step = state["global_step"]
        if "efficiency" in state:
            efficiency.load_state_dict(state["efficiency"])
        logger.info("Resumed from %s at step %d", resume, global_step)
    log = JsonlLogger(
        os.path.join(args.output_dir, LOG_FILE),
        resume_step=global_step if resume else None,
        enabled=accelerator.is_main_process,
    )
    logger.info(
        "Training %d steps (%d epochs of %d), %d images per step, lr %.3g, %s",
        max_train_steps, num_epochs, steps_per_epoch, total_batch_size(args, accelerator.num_processes), lr,
        "cached latents" if cache else "online encoding",
    )  # fmt: skip
    progress = ProgressBar(max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process)
    result = LMDTrainingResult(args.output_dir, global_step, None, None, 0.0)
    if cache is not None:
        result.cache_seconds, result.cache_reused = cache.seconds, cache.reused
    start = time.perf_counter() - log.time_offset
    loop_start = time.perf_counter()
    efficiency.restart_clock()
    try:
        for epoch in range(global_step // steps_per_epoch, num_epochs):
            if global_step >= max_train_steps:
                break
            epoch_start, epoch_steps = time.perf_counter(), global_step
            train_loader.set_epoch(epoch)
            skip = (global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
            batches = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
            micro, losses, images = 0, [], 0
            for batch in batches:
                mask_ratio = mask_scheduler.get_mask_ratio(global_step)
                step_lr = optimizer.param_groups[0]["lr"]  # the rate this step's update uses
                generator = step_generator(args.seed, global_step, micro, accelerator.process_index)
                with accelerator.accumulate(model):
                    latents = latents_for_batch(batch, None if cache else vae, args.random_flip, generator)
                    # A tuple: Accelerate's fp32 output conversion cannot rebuild LMDModelOutput.
                    _, _, loss = model(latents, mask_ratio=mask_ratio, generator=generator, return_dict=False)
                    mean_loss, rank_ratios = _gather_step_stats(accelerator, loss, mask_ratio)
                    _check_finite(mean_loss, global_step, mask_ratio, step_lr, args.output_dir)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                micro, images = micro + 1, images + latents.shape[0] * accelerator.num_processes
                losses.append(mean_loss)
                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                if ema is not None:
                    ema.step(model.parameters())
                step_loss = sum(losses) / len(losses)
                efficiency.update(step_loss)
                img_s = progress.update(step_loss, mask_ratio, step_lr, images)
                record = {"step": global_step, "loss": step_loss, "mask_ratio": mask_ratio, "lr": step_lr}
                record.update(efficiency.summary())
                if accelerator.num_processes > 1:
                    record["rank_mask_ratios"] = rank_ratios
                log.log({**record, "time": round(time.perf_counter() - start, 4), "epoch": epoch, "img_s": img_s})
                scalars = {"loss": step_loss, "mask_ratio": mask_ratio, "lr": step_lr, "img_s": img_s}
                accelerator.log({**scalars, **efficiency.summary()}, step=global_step)
                result.final_loss, micro, losses, images = step_loss, 0, [], 0
                if global_step % args.checkpointing_steps == 0:
                    extra = {"efficiency": efficiency.state_dict()}
                    save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit, extra)
                if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                    result.eval = _validate(accelerator, args, model, vae, eval_dataset, global_step, log)
                efficiency.restart_clock()  # logging, checkpoints and validation are not step time
                if global_step >= max_train_steps:
                    break
            if global_step - epoch_steps == steps_per_epoch:
                result.epoch_seconds.append(time.perf_counter() - epoch_start)
    finally:
        progress.close()
    result.global_step, result.train_seconds = global_step, time.perf_counter() - loop_start
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_model = _final_weights(accelerator.unwrap_model(model, keep_fp32_wrapper=False), ema)
        if ema is not None or global_step % args.validation_steps:  # else just measured at this step
            result.eval = evaluate_reconstruction(
                final_model, vae, eval_dataset, batch_size=args.eval_batch_size, max_images=args.max_eval_samples
            )
            log.log({"step": global_step, "eval_psnr": result.eval.psnr})
        metrics = {"optimiser steps": global_step, "final training loss": result.final_loss}
        metrics.update({f"{k} (SPEC §5)": v for k, v in efficiency.summary().items() if k != "loss_events"})
        finish_run(args, vae, final_model, mask_scheduler, eval_dataset, result.eval, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _final_weights(model: torch.nn.Module, ema) -> torch.nn.Module:
    """The model to save: a copy holding the EMA weights when ``--use_ema``, else the trained model."""
    if ema is None:
        return model
    final = copy.deepcopy(model)
    ema.copy_to(final.parameters())
    return final
