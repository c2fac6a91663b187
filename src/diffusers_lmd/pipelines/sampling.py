"""The sampling heads' reveal steps of ``LMDPipeline``, and the categorical head's codebook check at load.

The loop itself stays in ``LMDPipeline.__call__``; these are its two sampling branches. The categorical step turns
the decoder features into codes, lets ``LMDMaskScheduler.reveal`` keep the least confident tokens masked, and writes
the revealed tokens' codebook latents; the diffusion step samples the tokens the scheduler chose to reveal with the
per-token diffusion head.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, SchedulerMixin, VQModel

from ..masking import patchify, unpatchify
from ..models import LMDModel
from ..models.categorical_head import sample_codes
from ..models.diffusion_head import sample_tokens
from ..projector import vq_codebook
from ..schedulers import LMDMaskScheduler


@torch.no_grad()
def categorical_reveal_step(
    transformer: LMDModel,
    scheduler: LMDMaskScheduler,
    features: torch.Tensor,
    t: torch.Tensor,
    latents: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None,
    guidance_scale: float,
    temperature: float,
    choice_temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskGIT's step: draw a code for every position from the (guided) logits over ``temperature``, let the
    scheduler keep masked the least confident tokens, and write the revealed tokens' codes as their latents.

    ``features`` are the decoder features of ``latents`` (``2B`` rows with guidance: conditional, then
    unconditional); returns the new latents and mask."""
    logits = transformer.code_logits(features).float()
    if guidance_scale > 1:
        cond, uncond = logits.chunk(2)
        logits = uncond + guidance_scale * (cond - uncond)
    codes, confidence = sample_codes(logits / temperature, generator)
    revealed_mask = scheduler.reveal(t, mask, generator, confidence, choice_temperature)
    picked = (mask > 0) & (revealed_mask == 0)
    patch_size = transformer.config.patch_size
    patches = patchify(latents, patch_size)
    patches[picked] = transformer.codebook[codes[picked]].flatten(1).to(patches.dtype)
    return unpatchify(patches, patch_size, *latents.shape[2:]), revealed_mask


@torch.no_grad()
def diffusion_reveal_step(
    transformer: LMDModel,
    head_scheduler: SchedulerMixin,
    features: torch.Tensor,
    latents: torch.Tensor,
    mask: torch.Tensor,
    revealed_mask: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None,
    guidance_scale: float,
    temperature: float,
    num_head_inference_steps: int,
    head_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """MAR's step: sample the tokens masked in ``mask`` but not in ``revealed_mask`` (the scheduler's choice) with
    the diffusion head, guided, at ``temperature``, and write them into the latents, which it returns.

    ``features`` are the decoder features of ``latents`` (``2B`` rows with guidance: conditional, then
    unconditional); ``head_noise``, ``B x L x token_dim``, optionally fixes every token's starting noise."""
    picked = (mask > 0) & (revealed_mask == 0)
    tokens = sample_tokens(
        transformer.diffusion_head, features, picked, head_scheduler, num_head_inference_steps, generator,
        temperature, guidance_scale, head_noise,
    )  # fmt: skip
    patch_size = transformer.config.patch_size
    patches = patchify(latents, patch_size)
    patches[picked] = tokens.to(patches.dtype)
    return unpatchify(patches, patch_size, *latents.shape[2:])


def check_codebook_matches(vae: VQModel | AutoencoderKL, transformer: LMDModel) -> None:
    """A categorical transformer needs a ``VQModel`` with its number of codes; an unset codebook is taken from the
    projector, one that is set must be the projector's (the same codes and latent normalisation)."""
    codebook = vq_codebook(vae)  # a ValueError naming head_type='categorical' for an AutoencoderKL
    if codebook.shape[0] != transformer.config.codebook_size:
        raise ValueError(
            f"The transformer's categorical head has codebook_size={transformer.config.codebook_size} but the VQModel "
            f"projector has {codebook.shape[0]} codes (num_vq_embeddings): use the projector it was trained on."
        )
    if not transformer.codebook.any():
        transformer.set_codebook(codebook)
    elif not torch.allclose(transformer.codebook.float().cpu(), codebook.cpu(), rtol=1e-2, atol=1e-3):
        raise ValueError(
            "The transformer's codebook is not the projector's (vq_codebook(vae)): it was trained on another VQModel "
            "or another latent scaling_factor / shift_factor. Use the projector it was trained on."
        )
