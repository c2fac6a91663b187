"""One projector training step (autoencoder update, then discriminator update) and held-out evaluation."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from diffusers import VQModel
from torch import nn

from ..metrics import psnr
from .projector_losses import adaptive_weight, discriminator_loss, generator_loss, reconstruction_loss
from .runtime import NonFiniteLossError


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


class ProjectorTrainer:
    """Updates an ``AutoencoderWithLoss`` and a ``PatchDiscriminator`` already passed through
    ``accelerator.prepare`` (with their optimisers and LR schedulers), one micro-batch per :meth:`step`."""

    def __init__(
        self,
        accelerator: Accelerator,
        autoencoder: nn.Module,
        discriminator: nn.Module,
        optimizer: torch.optim.Optimizer,
        disc_optimizer: torch.optim.Optimizer,
        lr_scheduler=None,
        disc_lr_scheduler=None,
        config: ProjectorLossConfig | None = None,
    ):
        self.accelerator = accelerator
        self.autoencoder = autoencoder
        self.discriminator = discriminator
        self.optimizer = optimizer
        self.disc_optimizer = disc_optimizer
        self.lr_scheduler = lr_scheduler
        self.disc_lr_scheduler = disc_lr_scheduler
        self.config = config or ProjectorLossConfig()

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


@torch.no_grad()
def evaluate_projector(vae, images: Iterable, max_batches: int | None = None) -> dict[str, float]:
    """Held-out reconstruction quality: mean per-image PSNR (dB, images in ``[-1, 1]`` i.e. PSNR on ``[0, 1]``),
    and for a ``VQModel`` the share of the codebook the held-out images use."""
    was_training = vae.training
    vae.eval()
    scores, codes = [], set()
    for i, batch in enumerate(images):
        if max_batches is not None and i >= max_batches:
            break
        x = (batch["pixel_values"] if isinstance(batch, dict) else batch).to(device=vae.device, dtype=vae.dtype)
        if isinstance(vae, VQModel):
            latents = vae.encode(x).latents
            codes.update(vae.quantize(latents)[2][2].flatten().tolist())
            reconstruction = vae.decode(latents).sample
        else:
            reconstruction = vae(x, sample_posterior=False).sample
        scores.append(psnr(reconstruction.float().clamp(-1, 1), x.float(), data_range=2.0))
    vae.train(was_training)
    if not scores:
        raise ValueError("evaluate_projector got no images: the evaluation set is empty.")
    result = {"eval_psnr": torch.cat(scores).mean().item()}
    if isinstance(vae, VQModel):
        result["codebook_usage"] = len(codes) / vae.config.num_vq_embeddings
    return result
