"""The projector training run behind ``training/train_projector.py``: data, models, loop, checkpoints, save.

At the end the latent statistics are estimated on the training images and stored in the projector's config
(``scaling_factor`` and ``shift_factor``), so the saved folder produces the zero-mean, unit-variance
latents LMD trains on; the held-out PSNR is logged during training (on the EMA weights with ``--use_ema``) and
reported at the end. With ``--push_to_hub`` the repository is created before training starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import VQModel
from PIL import Image
from tqdm.auto import tqdm

from ..data import build_datasets, random_flip_batch
from ..data.transforms import random_color_batch
from ..projector import downsample_factor, estimate_latent_stats, set_latent_stats
from .args import accelerator_kwargs, check_projector_args, check_training_args, data_config, effective_learning_rate
from .checkpointing import load_checkpoint, resolve_resume_path, save_checkpoint
from .ema import copy_with_ema_weights, ema_weights
from .hub import HubUploader, save_model_card
from .logging import JsonlLogger, log_images, plot_loss_curve, plot_or_warn, read_jsonl, setup_logging
from .optim import build_ema, build_lr_scheduler, build_optimizer, register_ema_hooks
from .projector_model import (
    AutoencoderWithLoss,
    build_discriminator,
    build_projector,
    init_codebook_from_data,
)
from .projector_step import ProjectorLossConfig, ProjectorTrainer, evaluate_projector
from .runtime import build_accelerator

logger = get_logger(__name__)  # rank-aware: the main process speaks

METRICS_FILE = "projector_metrics.json"


def _dataloaders(args: argparse.Namespace, accelerator: Accelerator):
    with accelerator.main_process_first():
        train_dataset, eval_dataset = build_datasets(data_config(args))
    loader = dict(batch_size=args.train_batch_size, num_workers=args.dataloader_num_workers)
    train = torch.utils.data.DataLoader(
        train_dataset, shuffle=True, drop_last=len(train_dataset) >= args.train_batch_size, **loader
    )
    evaluation = torch.utils.data.DataLoader(eval_dataset, shuffle=False, **loader)
    stats = torch.utils.data.DataLoader(train_dataset, shuffle=False, **loader)  # unflipped, for the latent stats
    return train, evaluation, stats


def _codebook_init_images(args: argparse.Namespace, vq: VQModel, dataset) -> torch.Tensor:
    """Seeded training images giving about two encoder outputs per code (the same on every process)."""
    positions = (args.resolution // downsample_factor(vq)) ** 2
    count = min(len(dataset), max(1, math.ceil(2 * vq.config.num_vq_embeddings / positions)))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:count]
    return torch.stack([dataset[int(i)]["pixel_values"] for i in order])


def _augment(args: argparse.Namespace, images: torch.Tensor, step: int, micro_step: int, rank: int) -> torch.Tensor:
    """Flips and colour augmentation drawn from (seed, step, micro-batch, rank) only, so a resumed run sees the
    same views."""
    generator = torch.Generator().manual_seed(((args.seed * 1_000_003 + step) * 64 + micro_step) * 257 + rank)
    if args.random_flip:
        images = random_flip_batch(images, generator)
    if args.color_augment or args.saturation_jitter > 0:
        images = random_color_batch(images, generator, args.color_augment, args.saturation_jitter)
    return images


def _reconstruction_grid(vae, images: torch.Tensor, max_images: int = 8) -> np.ndarray:
    """Originals (top row) over reconstructions (bottom row), as an ``H x W x 3`` uint8 image."""
    with torch.no_grad():
        x = images[:max_images].to(device=vae.device, dtype=vae.dtype)
        reconstruction = vae(x).sample.clamp(-1, 1)
    rows = [torch.cat(list(t.float().cpu()), dim=-1) for t in (x, reconstruction)]
    grid = torch.cat(rows, dim=-2).add(1).mul(127.5).round().clamp(0, 255).byte()
    return grid.permute(1, 2, 0).numpy()


def _reduce_logs(accelerator: Accelerator, logs: dict[str, float]) -> dict[str, float]:
    """Mean of every logged value over the processes (one collective)."""
    if accelerator.num_processes == 1:
        return logs
    keys = sorted(logs)
    values = torch.tensor([logs[k] for k in keys], device=accelerator.device, dtype=torch.float64)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


def train_projector(args: argparse.Namespace) -> dict:
    """Train a projector as the flags say; save it to ``args.output_dir``; return the final metrics."""
    data_config(args)  # raises on bad data flags
    check_training_args(args)
    check_projector_args(args)
    # The LMD run's Accelerator (CPU gloo under torchrun, seedable data order); no torch.compile here, since the
    # adaptive weight differentiates the decoder's last layer outside the compiled forward.
    accelerator = build_accelerator(args.output_dir, **accelerator_kwargs(args))
    setup_logging(accelerator)
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    hub = HubUploader.from_args(args, accelerator.is_main_process)  # a bad token or repo fails now, not at the end

    train_loader, eval_loader, stats_loader = _dataloaders(args, accelerator)
    vae = build_projector(args)
    if isinstance(vae, VQModel) and args.codebook_init == "data":
        init_codebook_from_data(vae, _codebook_init_images(args, vae, train_loader.dataset))
    autoencoder = AutoencoderWithLoss(vae, args.commitment_beta, args.kl_weight)
    discriminator = build_discriminator(args)
    lr = effective_learning_rate(args, accelerator.num_processes)
    disc_lr = lr if args.disc_learning_rate is None else args.disc_learning_rate
    optimizer = build_optimizer(autoencoder, args, lr)
    disc_optimizer = build_optimizer(discriminator, args, disc_lr)

    steps_per_epoch = max(
        1, math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    )
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    lr_scheduler = build_lr_scheduler(optimizer, args, max_train_steps, accelerator.num_processes)
    disc_steps = max(1, max_train_steps - args.disc_start)
    disc_lr_scheduler = build_lr_scheduler(disc_optimizer, args, disc_steps, accelerator.num_processes)
    ema = None
    if args.use_ema:
        ema = build_ema(vae, args)
        ema.to(accelerator.device)
        register_ema_hooks(accelerator, ema)

    autoencoder, discriminator, optimizer, disc_optimizer, train_loader, lr_scheduler, disc_lr_scheduler = (
        accelerator.prepare(
            autoencoder, discriminator, optimizer, disc_optimizer, train_loader, lr_scheduler, disc_lr_scheduler
        )
    )
    trainer = ProjectorTrainer(
        accelerator,
        autoencoder,
        discriminator,
        optimizer,
        disc_optimizer,
        lr_scheduler,
        disc_lr_scheduler,
        ProjectorLossConfig(args.disc_start, args.disc_weight, args.disc_loss, args.max_grad_norm),
    )

    global_step = 0
    resume_path = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
    if resume_path is not None:
        global_step = load_checkpoint(accelerator, resume_path)["global_step"]
        logger.info("Resumed from %s at step %d", resume_path, global_step)
    logger.info(
        "Training %d steps (%d per epoch, %d images, batch %d per process x %d processes x %d accumulation)",
        max_train_steps,
        steps_per_epoch,
        len(train_loader.dataset),
        args.train_batch_size,
        accelerator.num_processes,
        args.gradient_accumulation_steps,
    )
    log_path = os.path.join(args.output_dir, "train_log.jsonl")
    jsonl = JsonlLogger(log_path, resume_step=global_step if resume_path else None, enabled=accelerator.is_main_process)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers(args.tracker_project_name or "train_projector", config=_tracker_config(args))

    unwrapped = accelerator.unwrap_model(autoencoder).vae
    start = time.perf_counter() - jsonl.time_offset
    bar = tqdm(total=max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="Steps")
    first_epoch = global_step // steps_per_epoch
    skip_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps
    for epoch in range(first_epoch, num_epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loader = train_loader
        if epoch == first_epoch and skip_batches:
            loader = accelerator.skip_first_batches(train_loader, skip_batches)
        micro_step = 0
        for batch in loader:
            images = _augment(args, batch["pixel_values"], global_step, micro_step, accelerator.process_index)
            logs = trainer.step(images, global_step)
            micro_step += 1
            if not accelerator.sync_gradients:
                continue
            micro_step = 0
            global_step += 1
            if ema is not None:
                ema.step(unwrapped.parameters())
            logs = _reduce_logs(accelerator, logs)
            record = {"step": global_step, **logs, "lr": lr_scheduler.get_last_lr()[0]}
            record["time"] = time.perf_counter() - start
            if global_step % args.validation_steps == 0 or global_step == max_train_steps:
                with ema_weights(ema, unwrapped):
                    record.update(_validate(accelerator, unwrapped, eval_loader, global_step))
            jsonl.log(record)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=global_step)
            bar.set_postfix(loss=f"{record['loss']:.4f}", rec=f"{record['rec_loss']:.4f}", lr=f"{record['lr']:.2e}")
            bar.update(1)
            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
                if hub is not None:
                    loaders = (eval_loader, stats_loader)
                    _push_checkpoint(hub, args, unwrapped, ema, loaders, global_step, time.perf_counter() - start)
            if global_step >= max_train_steps:
                break
        if global_step >= max_train_steps:
            break
    bar.close()
    train_seconds = time.perf_counter() - start

    accelerator.wait_for_everyone()
    result = {}
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        result = _finish(args, unwrapped, eval_loader, stats_loader, global_step, train_seconds, hub)
    accelerator.end_training()
    return result


def _validate(accelerator: Accelerator, vae, eval_loader, step: int) -> dict:
    """Held-out metrics on the main process (the eval set is small); ``{}`` elsewhere."""
    if not accelerator.is_main_process:
        return {}
    metrics = evaluate_projector(vae, eval_loader)
    if accelerator.trackers:
        log_images(
            accelerator, "reconstructions", _reconstruction_grid(vae, next(iter(eval_loader))["pixel_values"]), step
        )
    logger.info("step %d: held-out PSNR %.2f dB", step, metrics["eval_psnr"])
    return metrics


def _tracker_config(args: argparse.Namespace) -> dict:
    """Tracker hyper-parameters: scalars only (TensorBoard rejects lists and None)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) and k != "hub_token"}


def _finish(args, vae, eval_loader, stats_loader, global_step: int, train_seconds: float, hub) -> dict:
    """Save the projector folder (:func:`_save_folder`) with the loss curve, push it if asked, report the PSNR."""
    records = read_jsonl(os.path.join(args.output_dir, "train_log.jsonl"))
    if records:
        path = os.path.join(args.output_dir, "loss_curve.png")
        plot_or_warn(plot_loss_curve, records, path, title="Projector training loss")
    result = _save_folder(args, vae, eval_loader, stats_loader, global_step, train_seconds, args.output_dir)
    if hub is not None:
        hub.push_final()
    print(f"held-out PSNR: {result['eval_psnr']:.2f} dB (scaling_factor {result['scaling_factor']:.4f})")
    return result


def _push_checkpoint(hub: HubUploader, args, vae, ema, loaders, step: int, seconds: float) -> None:
    """``--hub_strategy every_save``: upload the projector as it is now (EMA weights with ``--use_ema``, its own
    latent statistics), saved from a copy so that the model being trained is left untouched."""

    def write(folder: str) -> None:
        _save_folder(args, copy_with_ema_weights(vae, ema), *loaders, step, seconds, folder)

    hub.push_checkpoint(step, write)


def _save_folder(args, vae, eval_loader, stats_loader, global_step: int, train_seconds: float, folder: str) -> dict:
    """Estimate and store the latent statistics, evaluate, and save the projector, metrics, reconstructions and
    card to ``folder`` (the output folder at the end, a staging folder for a checkpoint push)."""
    vae.eval()
    scale, shift = estimate_latent_stats(vae, stats_loader, max_batches=args.stats_max_batches)
    set_latent_stats(vae, scale, shift)
    metrics = evaluate_projector(vae, eval_loader)
    vae.save_pretrained(folder, safe_serialization=True)
    result = {
        "projector_class": type(vae).__name__,
        "global_step": global_step,
        "train_seconds": round(train_seconds, 1),
        "eval_psnr": metrics["eval_psnr"],
        "scaling_factor": scale,
        "shift_factor": shift,
        "num_parameters": sum(p.numel() for p in vae.parameters()),
    }
    if "codebook_usage" in metrics:
        result["codebook_usage"] = metrics["codebook_usage"]
    with open(os.path.join(folder, METRICS_FILE), "w") as f:
        json.dump(result, f, indent=2)
    grid = _reconstruction_grid(vae, next(iter(eval_loader))["pixel_values"])
    Image.fromarray(grid).save(os.path.join(folder, "reconstructions.png"))
    _write_card(args, vae, result, folder)
    return result


def _write_card(args, vae, result: dict, folder: str) -> None:
    cls = type(vae).__name__
    save_model_card(
        folder,
        title=f"diffusers-lmd projector ({cls})",
        description=f"A {cls} trained with `training/train_projector.py` as the frozen projector of Latent Masking "
        "Diffusion (arXiv 2312.07971). Its config stores the latent `scaling_factor` estimated on the training data.",
        usage=f'from diffusers import {cls}\n\nvae = {cls}.from_pretrained("<this folder or repo>")',
        args=args,
        metrics={"held-out PSNR (dB)": result["eval_psnr"], "scaling_factor": result["scaling_factor"]},
        images=[("Held-out reconstructions (top: original)", "reconstructions.png"), ("Loss", "loss_curve.png")],
        tags=["autoencoder", "lmd-projector"],
    )
