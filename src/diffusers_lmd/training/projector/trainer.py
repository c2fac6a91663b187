"""The projector training engine behind ``training/train_projector.py``: one step (autoencoder update, then
discriminator update) and the run around it (data, models, loop, checkpoints, save).

At the end the latent statistics are estimated on the training images and stored in the projector's config
(``scaling_factor`` and ``shift_factor``), so the saved folder produces the zero-mean, unit-variance
latents LMD trains on; the held-out PSNR is logged during training (on the EMA weights with ``--use_ema``) and
reported at the end. With ``--push_to_hub`` the repository is created before training starts.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import VQModel
from torch import nn
from tqdm.auto import tqdm

from ...data import DataConfig, build_datasets, random_flip_batch
from ...data.transforms import random_color_batch
from ...projector import downsample_factor
from ..args import (
    accelerator_kwargs,
    check_projector_args,
    check_training_args,
    data_config,
    effective_learning_rate,
    optimizer_config,
    options_from_args,
    projector_kwargs,
)
from ..checkpointing import load_checkpoint, resolve_resume_path, save_checkpoint
from ..ema import ema_weights
from ..hub import HubUploader
from ..logging import JsonlLogger, setup_logging
from ..optim import build_ema, build_lr_scheduler, build_optimizer, register_ema_hooks
from ..runtime import NonFiniteLossError, build_accelerator
from .model import (
    AutoencoderWithLoss,
    adaptive_weight,
    build_discriminator,
    build_projector,
    discriminator_loss,
    generator_loss,
    init_codebook_from_data,
    reconstruction_loss,
)
from .outputs import finish_run, push_checkpoint, validate

logger = get_logger(__name__)  # rank-aware: the main process speaks


@dataclass
class ProjectorLossConfig:
    """How the projector losses combine.

    Args:
        disc_start: optimiser step from which the discriminator trains and its loss enters (warm-up before).
        disc_weight: factor on the adaptive weight ``gamma``; 0 trains a plain VQ/KL autoencoder.
        disc_loss: ``hinge`` or ``vanilla``.
        max_grad_norm: gradient clipping of both networks; 0 disables it.
    """

    disc_start: int = 0
    disc_weight: float = 0.5
    disc_loss: str = "hinge"
    max_grad_norm: float = 1.0


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """Parameters without gradients inside the block: the autoencoder's step backpropagates through the
    discriminator to its input only (and leaves the discriminator's DDP reducer untouched)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for param, flag in zip(module.parameters(), flags):
            param.requires_grad_(flag)


@dataclass(eq=False)  # compared and hashed by identity, as a plain object
class ProjectorTrainer:
    """Updates an ``AutoencoderWithLoss`` and a ``PatchDiscriminator`` already passed through
    ``accelerator.prepare`` (with their optimisers and LR schedulers), one micro-batch per :meth:`step`."""

    accelerator: Accelerator
    autoencoder: nn.Module
    discriminator: nn.Module
    optimizer: torch.optim.Optimizer
    disc_optimizer: torch.optim.Optimizer
    lr_scheduler: object = None
    disc_lr_scheduler: object = None
    config: ProjectorLossConfig | None = None

    def __post_init__(self):
        self.config = self.config or ProjectorLossConfig()

    def uses_discriminator(self, global_step: int) -> bool:
        return self.config.disc_weight > 0 and global_step >= self.config.disc_start

    def step(self, images: torch.Tensor, global_step: int) -> dict[str, float]:
        """One micro-batch of ``images`` in ``[-1, 1]``; returns the losses as floats.

        ``global_step`` is the optimiser step being taken: it decides whether the discriminator is active.
        Raises ``NonFiniteLossError`` (a ``FloatingPointError``) on a non-finite loss, before any weight changes.
        """
        use_disc = self.uses_discriminator(global_step)
        with self.accelerator.accumulate(self.autoencoder, self.discriminator):
            logs = self._autoencoder_step(images, use_disc)
            if use_disc:
                logs["disc_loss"] = self._discriminator_step(images, logs.pop("_reconstruction"))
        logs.pop("_reconstruction", None)
        return logs

    def _autoencoder_step(self, images: torch.Tensor, use_disc: bool) -> dict:
        autoencoder = self.accelerator.unwrap_model(self.autoencoder)
        with self.accelerator.autocast():
            reconstruction, reg_loss = self.autoencoder(images)
            rec_loss = reconstruction_loss(reconstruction, images)
            loss = rec_loss + reg_loss.float()
            logs = {"rec_loss": rec_loss.item(), "reg_loss": reg_loss.item()}
            if use_disc:
                with _frozen(self.accelerator.unwrap_model(self.discriminator)) as disc:
                    gan_loss = generator_loss(disc(reconstruction).float(), self.config.disc_loss)
                gamma = self.config.disc_weight * adaptive_weight(rec_loss, gan_loss, autoencoder.last_layer)
                loss = loss + gamma * gan_loss
                logs.update(gan_loss=gan_loss.item(), adaptive_weight=gamma.item())
        _check_finite(loss, "autoencoder")
        self.accelerator.backward(loss)
        self._clip_and_step(self.autoencoder, self.optimizer, self.lr_scheduler)
        logs["loss"] = loss.item()
        logs["_reconstruction"] = reconstruction.detach()
        return logs

    def _discriminator_step(self, images: torch.Tensor, reconstruction: torch.Tensor) -> float:
        with self.accelerator.autocast():
            # One forward over real and fake together: a single DDP forward per backward.
            logits = self.discriminator(torch.cat([images, reconstruction.to(images.dtype)])).float()
            real_logits, fake_logits = logits.chunk(2)
            loss = discriminator_loss(real_logits, fake_logits, self.config.disc_loss)
        _check_finite(loss, "discriminator")
        self.accelerator.backward(loss)
        self._clip_and_step(self.discriminator, self.disc_optimizer, self.disc_lr_scheduler)
        return loss.item()

    def _clip_and_step(self, model: nn.Module, optimizer, lr_scheduler) -> None:
        if self.accelerator.sync_gradients and self.config.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def _check_finite(loss: torch.Tensor, what: str) -> None:
    if not math.isfinite(loss.item()):
        raise NonFiniteLossError(
            f"The {what} loss is {loss.item()}: training stopped before updating the weights. Lower the learning "
            "rate, check the data, or resume from the last checkpoint."
        )


def _dataloaders(data: DataConfig, batch_size: int, accelerator: Accelerator):
    """Shuffled training batches, held-out batches, and unflipped training batches for the latent statistics."""
    with accelerator.main_process_first():
        train_dataset, eval_dataset = build_datasets(data)
    loader = dict(batch_size=batch_size, num_workers=data.dataloader_num_workers)
    train = torch.utils.data.DataLoader(
        train_dataset, shuffle=True, drop_last=len(train_dataset) >= batch_size, **loader
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
    data = data_config(args)  # raises on bad data flags
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

    train_loader, eval_loader, stats_loader = _dataloaders(data, args.train_batch_size, accelerator)
    vae = build_projector(**projector_kwargs(args))
    if isinstance(vae, VQModel) and args.codebook_init == "data":
        init_codebook_from_data(vae, _codebook_init_images(args, vae, train_loader.dataset))
    autoencoder = AutoencoderWithLoss(vae, args.commitment_beta, args.kl_weight)
    discriminator = build_discriminator(args.disc_channels, args.disc_layers)
    lr = effective_learning_rate(args, accelerator.num_processes)
    disc_lr = lr if args.disc_learning_rate is None else args.disc_learning_rate
    optim = optimizer_config(args)
    optimizer = build_optimizer(autoencoder, optim, lr)
    disc_optimizer = build_optimizer(discriminator, optim, disc_lr)

    steps_per_epoch = max(
        1, math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    )
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    lr_scheduler = build_lr_scheduler(optimizer, optim, max_train_steps, accelerator.num_processes)
    disc_steps = max(1, max_train_steps - args.disc_start)
    disc_lr_scheduler = build_lr_scheduler(disc_optimizer, optim, disc_steps, accelerator.num_processes)
    ema = None
    if args.use_ema:
        ema = build_ema(vae, optim)
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
        options_from_args(ProjectorLossConfig, args),
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
                    record.update(validate(accelerator, unwrapped, eval_loader, global_step))
            jsonl.log(record)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=global_step)
            bar.set_postfix(loss=f"{record['loss']:.4f}", rec=f"{record['rec_loss']:.4f}", lr=f"{record['lr']:.2e}")
            bar.update(1)
            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
                if hub is not None:
                    loaders = (eval_loader, stats_loader)
                    push_checkpoint(hub, args, unwrapped, ema, loaders, global_step, time.perf_counter() - start)
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
        result = finish_run(args, unwrapped, eval_loader, stats_loader, global_step, train_seconds, hub)
    accelerator.end_training()
    return result


def _tracker_config(args: argparse.Namespace) -> dict:
    """Tracker hyper-parameters: scalars only (TensorBoard rejects lists and None)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) and k != "hub_token"}
