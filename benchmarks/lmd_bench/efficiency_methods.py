"""The masked-ViT methods of the efficiency benchmark: LMD (latent or pixel) and transformers' ViTMAE.

A method is a model plus two things the benchmark loop needs: ``training_loss`` on a batch of its input space
(latents or pixels) at a point of the run, and ``reconstruct``, which completes held-out images under a given
token mask and returns them in pixel space, so every method is scored the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from diffusers_lmd.evaluation import reconstruct as reconstruct_latent
from diffusers_lmd.masking import keep_visible
from diffusers_lmd.models import LMDModel
from diffusers_lmd.projector import Projector
from diffusers_lmd.schedulers import LMDMaskScheduler

# The wall-clock run is mapped onto this many schedule steps, so a ratio schedule spans the whole budget.
SCHEDULE_RESOLUTION = 10_000


def mask_ratio_at(scheduler: LMDMaskScheduler, progress: float) -> float:
    """The schedule's ratio at ``progress`` in ``[0, 1]`` of the run (the share of the time budget spent)."""
    step = round(min(max(progress, 0.0), 1.0) * SCHEDULE_RESOLUTION)
    return scheduler.get_mask_ratio(step, SCHEDULE_RESOLUTION)


class EfficiencyMethod(ABC):
    """Base class: one row of the benchmark.

    Attributes:
        name: the row's ``method`` key.
        space: ``"latent"`` (trained on cached projector latents) or ``"pixel"``.
        model: the trained module (the optimiser updates all its parameters).
        reconstructs: whether :meth:`reconstruct` exists (the diffusion baselines report no PSNR).
        token_pixels: side in pixels of one token's footprint, which the evaluation mask is laid out in.
    """

    name: str
    space: str
    model: nn.Module
    reconstructs: bool = True
    token_pixels: int

    @abstractmethod
    def training_loss(self, batch: torch.Tensor, progress: float, generator: torch.Generator) -> torch.Tensor:
        """The scalar loss of one batch at ``progress`` (share of the budget spent); randomness from ``generator``."""

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Images in ``[-1, 1]`` completed under the ``B x L`` token ``mask`` (1 = masked), in ``[-1, 1]``."""
        raise NotImplementedError(f"{self.name} is a diffusion baseline: it reports no reconstruction PSNR.")

    def mask_ratio(self, progress: float) -> float | None:
        """The training mask ratio at ``progress`` (``None`` for methods without one)."""
        return None

    def predict_latents(self, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The latent a latent-space method predicts under ``mask`` (``None`` for pixel methods)."""
        return None


class LMDMethod(EfficiencyMethod):
    """``LMDModel`` with a mask-ratio schedule, on projector latents (``vae`` given) or directly on pixels.

    On latents, held-out images go through the projector both ways (encode, predict masked tokens, keep visible
    latents, decode): the projector's own loss counts against the method, as it would for a user.
    """

    def __init__(
        self, name: str, model: LMDModel, scheduler: LMDMaskScheduler, vae: Projector | None, downsample: int = 1
    ):
        self.name, self.model, self.scheduler, self.vae = name, model, scheduler, vae
        self.space = "latent" if vae is not None else "pixel"
        self.token_pixels = downsample * model.config.patch_size

    def mask_ratio(self, progress: float) -> float:
        return mask_ratio_at(self.scheduler, progress)

    def training_loss(self, batch: torch.Tensor, progress: float, generator: torch.Generator) -> torch.Tensor:
        return self.model(batch, mask_ratio=self.mask_ratio(progress), generator=generator).loss

    def predict_latents(self, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        return self.model(latents, mask=mask).sample if self.vae is not None else None

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.vae is not None:
            return reconstruct_latent(self.model, self.vae, images, mask)
        prediction = self.model(images, mask=mask).sample
        return keep_visible(images, prediction, mask, self.model.config.patch_size).clamp(-1.0, 1.0)


class ViTMAEMethod(EfficiencyMethod):
    """transformers' ``ViTMAEForPreTraining`` on pixels with its fixed mask ratio: the paper's MAE row.

    Its masking is driven through the ``noise`` argument (tokens with the lowest noise stay visible), so both
    training masks and the evaluation mask come from the benchmark's own generator and mask.
    """

    space = "pixel"

    def __init__(self, name: str, model: nn.Module):
        self.name, self.model = name, model
        self.token_pixels = model.config.patch_size

    def mask_ratio(self, progress: float) -> float:
        return self.model.config.mask_ratio

    def _num_tokens(self, images: torch.Tensor) -> int:
        return (images.shape[2] // self.token_pixels) * (images.shape[3] // self.token_pixels)

    def training_loss(self, batch: torch.Tensor, progress: float, generator: torch.Generator) -> torch.Tensor:
        noise = torch.rand(batch.shape[0], self._num_tokens(batch), generator=generator, device=generator.device)
        return self.model(pixel_values=batch, noise=noise.to(batch.device)).loss

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(device=images.device, dtype=torch.float32)
        output = self.model(pixel_values=images, noise=mask)  # masked tokens get the highest noise
        if not torch.equal(output.mask, mask):
            raise ValueError(
                f"ViTMAE masks {int(output.mask[0].sum())} tokens per image at mask_ratio="
                f"{self.model.config.mask_ratio}, but the evaluation mask has {int(mask[0].sum())}: use that ratio."
            )
        prediction = self.model.unpatchify(output.logits, tuple(images.shape[2:]))
        return keep_visible(images, prediction, mask, self.token_pixels).clamp(-1.0, 1.0)
