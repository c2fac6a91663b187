"""The U-Net methods of the efficiency benchmark, built from diffusers' ``UNet2DModel``.

- ``MaskedUNetMethod`` (``lmd-unet``, the paper's "w/o MAE" ablation): the LMD objective, a rising mask ratio
  and masked-latent MSE, with the ViT replaced by a U-Net that sees the masked latent plus the mask as an extra
  channel (masked positions zeroed) and gets the mask ratio as its timestep.
- ``DDPMMethod`` (``ddpm-pixel``, ``ldm-latent``): epsilon-prediction denoising with ``DDPMScheduler``, in pixel
  space or on the projector's latents. Their loss is a noise-prediction MSE, so they report MIT / MLI / MLT only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from diffusers_lmd.masking import keep_visible, random_mask, token_mask_to_latent_mask
from diffusers_lmd.projector import Projector, decode_latents, encode_images
from diffusers_lmd.schedulers import LMDMaskScheduler

from .efficiency_methods import EfficiencyMethod, mask_ratio_at


class MaskedUNetMethod(EfficiencyMethod):
    """A ``UNet2DModel`` (``in_channels = latent channels + 1``) trained to fill masked latent patches."""

    space = "latent"

    def __init__(
        self,
        name: str,
        model: UNet2DModel,
        scheduler: LMDMaskScheduler,
        vae: Projector,
        patch_size: int,
        downsample: int,
    ):
        channels = model.config.out_channels
        if model.config.in_channels != channels + 1:
            raise ValueError(
                f"The masked U-Net needs in_channels = out_channels + 1 (latent + mask), got "
                f"{model.config.in_channels} and {channels}."
            )
        self.name, self.model, self.scheduler, self.vae = name, model, scheduler, vae
        self.patch_size = patch_size
        self.token_pixels = downsample * patch_size

    def mask_ratio(self, progress: float) -> float:
        return mask_ratio_at(self.scheduler, progress)

    def predict(self, latents: torch.Tensor, mask: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        """The U-Net's latent prediction from the visible latents, the mask channel and the ratio as timestep."""
        b, _, h, w = latents.shape
        spatial = token_mask_to_latent_mask(mask, self.patch_size, h, w).to(latents.dtype)
        inputs = torch.cat([latents * (1.0 - spatial), spatial], dim=1)
        timestep = torch.full((b,), round(mask_ratio * 999), device=latents.device, dtype=torch.long)
        return self.model(inputs, timestep).sample

    def predict_latents(self, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.predict(latents, mask, float(mask.float().mean()))

    def training_loss(self, batch: torch.Tensor, progress: float, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = batch.shape
        ratio = self.mask_ratio(progress)
        num_tokens = (h // self.patch_size) * (w // self.patch_size)
        mask = random_mask(b, num_tokens, ratio, generator=generator, device=batch.device)
        prediction = self.predict(batch, mask, ratio)
        spatial = token_mask_to_latent_mask(mask, self.patch_size, h, w)
        per_position = (prediction.float() - batch.float()).pow(2).mean(dim=1, keepdim=True)
        return (per_position * spatial).sum() / spatial.sum().clamp(min=1)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latents = encode_images(self.vae, images)
        mask = mask.to(latents.device)
        prediction = self.predict_latents(latents, mask)
        completed = keep_visible(latents, prediction, mask, self.patch_size)
        return decode_latents(self.vae, completed).float().clamp(-1.0, 1.0)


class DDPMMethod(EfficiencyMethod):
    """Epsilon-prediction DDPM training of a ``UNet2DModel`` on pixels or latents (no reconstruction score)."""

    reconstructs = False

    def __init__(self, name: str, model: UNet2DModel, space: str, noise_scheduler: DDPMScheduler | None = None):
        if space not in ("pixel", "latent"):
            raise ValueError(f"space must be 'pixel' or 'latent', got {space!r}.")
        self.name, self.model, self.space = name, model, space
        self.noise_scheduler = noise_scheduler or DDPMScheduler(num_train_timesteps=1000)
        self.token_pixels = 0

    def training_loss(self, batch: torch.Tensor, progress: float, generator: torch.Generator) -> torch.Tensor:
        return self.denoising_loss(batch, generator)

    def denoising_loss(
        self, batch: torch.Tensor, generator: torch.Generator, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Noise-prediction MSE at uniformly drawn timesteps; ``class_labels`` go to a class-conditional U-Net."""
        noise = torch.randn(batch.shape, generator=generator, device=generator.device).to(batch)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (batch.shape[0],), generator=generator, device=generator.device)
        timesteps = timesteps.to(batch.device)
        noisy = self.noise_scheduler.add_noise(batch, noise, timesteps)
        return F.mse_loss(self.model(noisy, timesteps, class_labels=class_labels).sample.float(), noise.float())
