"""The class-conditional generators of the generation benchmark and how each is sampled.

A method trains on a batch of its space (pixels or the projector's cached latents) with the batch's class labels,
and samples images in ``[-1, 1]`` for given labels with a fixed sampler setting that it reports. Classifier-free
guidance is the same for every method: labels are replaced by the null class (label ``num_classes``, DiT's
convention) with probability ``label_dropout`` in training, and sampling mixes ``uncond + s * (cond - uncond)``
with one guidance scale ``s`` for all (``s = 1``: plain conditional sampling, no second pass).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from diffusers_lmd.projector import Projector, decode_latents
from diffusers_lmd.training import load_projector

from .unet_methods import DDPMMethod

# The noise schedules of the two U-Net peers: DDPM's linear betas on pixels, LDM's scaled-linear on latents
# (LDM's f=4 LSUN configs: 0.0015 -> 0.0195 in sqrt space); epsilon prediction, 1000 training steps.
PIXEL_NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
LATENT_NOISE_SCHEDULE = dict(
    num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195, clip_sample=False
)


def drop_labels(labels: torch.Tensor, null_label: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    """``labels`` with each replaced by ``null_label`` with ``probability`` (classifier-free guidance training)."""
    if probability <= 0:
        return labels
    drop = torch.rand(labels.shape[0], generator=generator, device=generator.device) < probability
    return torch.where(drop.to(labels.device), torch.full_like(labels, null_label), labels)


def balanced_labels(count: int, num_classes: int) -> torch.Tensor:
    """``0, 1, ..., K-1, 0, 1, ...``: every class equally often, and any prefix of ``K * n`` is balanced too."""
    if count < 1 or num_classes < 1:
        raise ValueError(f"count and num_classes must be positive, got {count} and {num_classes}.")
    return torch.arange(count) % num_classes


class GenerationMethod(ABC):
    """Base class: one row of the generation benchmark.

    Attributes:
        name: the row's ``method`` key.
        space: ``"latent"`` (trained on cached projector latents) or ``"pixel"``.
        model: the trained module (the optimiser updates all its parameters).
        num_classes: number of classes; label ``num_classes`` is the null class.
    """

    name: str
    space: str
    model: nn.Module
    num_classes: int

    @abstractmethod
    def conditional_loss(
        self, batch: torch.Tensor, labels: torch.Tensor, progress: float, generator: torch.Generator
    ) -> torch.Tensor:
        """The scalar loss of a batch with its labels at ``progress`` (share of the budget spent), label dropout
        included; randomness from ``generator``."""

    @abstractmethod
    def sample(self, labels: torch.Tensor, guidance_scale: float, generator: torch.Generator) -> torch.Tensor:
        """``B x 3 x R x R`` images in ``[-1, 1]`` of the classes ``labels``, decoded to pixels."""

    @abstractmethod
    def sampler_setting(self) -> dict:
        """The fixed sampler setting this method is scored with (reported beside its numbers)."""

    def mask_ratio(self, progress: float) -> float | None:
        """The training mask ratio at ``progress`` (``None`` for methods without one)."""
        return None

    @abstractmethod
    def save_pretrained(self, folder: str) -> None:
        """Save the model as it is now (the benchmark calls it with the EMA weights in place) in diffusers
        folders that the method's own loader reads back, safetensors only."""


CLASS_LABELS_FILE = "class_labels.json"


def write_class_labels(method: GenerationMethod, folder: str) -> None:
    """``class_labels.json`` beside a saved model: the class count, the null class id (DiT's convention: label
    ``num_classes`` is the unconditional one) and the sampler setting the row was scored with."""
    os.makedirs(folder, exist_ok=True)
    saved = {
        "method": method.name,
        "num_classes": method.num_classes,
        "null_class_id": method.num_classes,
        "sampler": method.sampler_setting(),
    }
    with open(os.path.join(folder, CLASS_LABELS_FILE), "w") as f:
        json.dump(saved, f, indent=2)


def read_class_labels(folder: str) -> dict:
    """What :func:`write_class_labels` wrote."""
    with open(os.path.join(folder, CLASS_LABELS_FILE)) as f:
        return json.load(f)


class ConditionalDiffusionMethod(DDPMMethod, GenerationMethod):
    """A class-conditional ``UNet2DModel`` (diffusers' way: ``num_class_embeds`` + ``class_labels``), epsilon-
    prediction DDPM training, DDIM sampling (``eta = 0``) with a fixed number of steps.

    On latents (``vae`` given) it is LDM: trained on the cached normalised latents, samples decoded by the projector.

    Args:
        num_classes: real classes; the U-Net needs ``num_class_embeds = num_classes + 1`` (the null class).
        label_dropout: share of training labels replaced by the null class.
        num_inference_steps: DDIM steps at sampling.
    """

    def __init__(
        self,
        name: str,
        model: UNet2DModel,
        space: str,
        num_classes: int,
        noise_scheduler: DDPMScheduler,
        vae: Projector | None = None,
        label_dropout: float = 0.1,
        num_inference_steps: int = 50,
    ):
        super().__init__(name, model, space, noise_scheduler)
        if model.config.num_class_embeds != num_classes + 1:
            raise ValueError(
                f"The U-Net has num_class_embeds={model.config.num_class_embeds}; a {num_classes}-class model with a "
                f"null class for guidance needs num_class_embeds={num_classes + 1}."
            )
        if (space == "latent") != (vae is not None):
            raise ValueError("A latent diffusion method needs the projector (vae) to decode; a pixel one takes none.")
        if not 0.0 <= label_dropout < 1.0 or num_inference_steps < 1:
            raise ValueError(f"Need 0 <= label_dropout < 1 and num_inference_steps >= 1, got {label_dropout}, "
                             f"{num_inference_steps}.")  # fmt: skip
        self.num_classes, self.vae = num_classes, vae
        self.label_dropout, self.num_inference_steps = label_dropout, num_inference_steps

    def conditional_loss(
        self, batch: torch.Tensor, labels: torch.Tensor, progress: float, generator: torch.Generator
    ) -> torch.Tensor:
        labels = drop_labels(labels.to(batch.device), self.num_classes, self.label_dropout, generator)
        return self.denoising_loss(batch, generator, class_labels=labels)

    def _guided_noise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1.0:
            return self.model(x, t, class_labels=labels).sample
        null = torch.full_like(labels, self.num_classes)
        cond, uncond = self.model(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample.chunk(2)
        return uncond + scale * (cond - uncond)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, guidance_scale: float, generator: torch.Generator) -> torch.Tensor:
        device = next(self.model.parameters()).device
        config = self.model.config
        scheduler = DDIMScheduler.from_config(self.noise_scheduler.config)
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        shape = (labels.shape[0], config.in_channels, config.sample_size, config.sample_size)
        x = torch.randn(shape, generator=generator, device=generator.device).to(device) * scheduler.init_noise_sigma
        labels = labels.to(device)
        for t in scheduler.timesteps:
            noise = self._guided_noise(x, t, labels, guidance_scale)
            x = scheduler.step(noise.float(), t, x, eta=0.0).prev_sample
        if self.vae is not None:
            x = decode_latents(self.vae, x)
        return x.float().clamp(-1.0, 1.0)

    def save_pretrained(self, folder: str) -> None:
        """``unet/`` (the ``UNet2DModel``), ``scheduler/`` (the ``DDIMScheduler`` it samples with), ``vae/`` (the
        projector, LDM only) and ``class_labels.json``: DDPMPipeline's / DiTPipeline's folder layout."""
        self.model.save_pretrained(os.path.join(folder, "unet"))
        DDIMScheduler.from_config(self.noise_scheduler.config).save_pretrained(os.path.join(folder, "scheduler"))
        if self.vae is not None:
            self.vae.save_pretrained(os.path.join(folder, "vae"))
        write_class_labels(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str) -> ConditionalDiffusionMethod:
        """The method saved by :meth:`save_pretrained` (name and DDIM steps from ``class_labels.json``)."""
        saved = read_class_labels(folder)
        has_vae = os.path.isdir(os.path.join(folder, "vae"))
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        return cls(
            saved["method"],
            UNet2DModel.from_pretrained(folder, subfolder="unet"),
            "latent" if has_vae else "pixel",
            saved["num_classes"],
            DDPMScheduler.from_config(scheduler.config),
            load_projector(folder, "vae") if has_vae else None,
            saved["sampler"]["label_dropout"],
            saved["sampler"]["steps"],
        )

    def sampler_setting(self) -> dict:
        schedule = self.noise_scheduler.config
        return {
            "sampler": f"DDIM {self.num_inference_steps} steps, eta 0 (diffusers DDIMScheduler)",
            "steps": self.num_inference_steps,
            "noise_schedule": f"{schedule.beta_schedule} {schedule.beta_start:g}-{schedule.beta_end:g}, "
            f"{schedule.num_train_timesteps} steps, epsilon prediction",
            "label_dropout": self.label_dropout,
        }
