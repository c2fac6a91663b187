"""A categorical head over a ``VQModel``'s codebook (MaskGIT / Muse style): each token's ``p x p`` codes.

Where the MSE head predicts a masked patch's mean and the diffusion head samples a continuous patch, this head
predicts, for each of the ``p * p`` latent positions of a token, a distribution over the projector's ``K`` codes
(``nn.Linear(decoder_hidden_size, p * p * K)`` on the decoder feature). It trains with cross-entropy against the
nearest codes of the latents (:func:`~diffusers_lmd.projector.nearest_codes`, the codes ``VQModel.quantize``
picks), and samples codes, which are written back as their codebook latents: the encoder sees quantised latents in
training and in sampling alike. The helpers here are pure functions of the logits, codes and codebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_amused import gumbel_noise
from torch import nn

from ..masking import patchify, unpatchify
from ..projector import nearest_codes

DEFAULT_CHOICE_TEMPERATURE = 4.5  # MaskGIT's: the Gumbel noise on the reveal order's confidence, annealed to 0


def check_codebook(codebook: torch.Tensor, codebook_size: int, channels: int) -> None:
    """Raise a ``ValueError`` unless ``codebook`` is a ``codebook_size x channels`` tensor that is not all zeros."""
    if not isinstance(codebook, torch.Tensor) or tuple(codebook.shape) != (codebook_size, channels):
        shape = tuple(codebook.shape) if isinstance(codebook, torch.Tensor) else type(codebook).__name__
        raise ValueError(
            f"codebook must be codebook_size x in_channels = {codebook_size} x {channels} (projector.vq_codebook(vae) "
            f"of the VQModel the model trains on), got {shape}."
        )
    if not codebook.any():
        raise ValueError("codebook is all zeros: pass projector.vq_codebook(vae) of the VQModel the model trains on.")


def code_targets(latents: torch.Tensor, codebook: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The nearest code at every latent position, per token: ``B x L x p*p`` (long), token positions row-major."""
    return patchify(nearest_codes(latents, codebook)[:, None], patch_size)


def codes_to_latents(codes: torch.Tensor, codebook: torch.Tensor, patch_size: int, height: int, width: int):
    """``B x L x p*p`` codes -> their codebook latents, ``B x C x H x W`` (the inverse of :func:`code_targets` on
    quantised latents)."""
    grid = unpatchify(codes, patch_size, height, width)[:, 0]  # B x H x W
    return codebook[grid].permute(0, 3, 1, 2)


def quantise(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Each latent position replaced by its nearest code's latent (what ``VQModel`` decodes), in ``latents``' dtype."""
    codes = nearest_codes(latents, codebook)
    return codebook.to(latents.device)[codes].permute(0, 3, 1, 2).to(latents.dtype)


def categorical_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``B x L x p*p x K`` logits against ``B x L x p*p`` codes: the mean over a token's positions,
    averaged over tokens with ``weight`` (``B x L``, 1 = masked); 0 when nothing is masked."""
    per_position = F.cross_entropy(logits.flatten(0, 2).float(), targets.flatten(), reduction="none")
    per_token = per_position.view(targets.shape).mean(dim=-1)
    return (per_token * weight).sum() / weight.sum().clamp(min=1)


def sample_codes(
    logits: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a code per position from ``B x L x p*p x K`` logits (already divided by the temperature) by the
    Gumbel-max trick, with diffusers' ``gumbel_noise``.

    Returns the codes (``B x L x p*p``, long) and each token's confidence: the sum over its ``p*p`` positions of the
    log-probability of the drawn codes (``B x L``). With a list of generators, row ``i``'s noise comes from generator
    ``i`` alone, so a batch draws what single-image calls draw.
    """
    logits = logits.float()
    if isinstance(generator, list):
        if len(generator) != logits.shape[0]:
            raise ValueError(f"Got {len(generator)} generators for {logits.shape[0]} images: pass one per image.")
        noise = torch.cat([gumbel_noise(logits[i : i + 1], g) for i, g in enumerate(generator)])
    else:
        noise = gumbel_noise(logits, generator)
    codes = (logits + noise).argmax(dim=-1)
    log_probs = logits.log_softmax(dim=-1).gather(-1, codes[..., None])[..., 0]
    return codes, log_probs.sum(dim=-1)


class CategoricalHeadMixin:
    """``LMDModel``'s codebook methods; the model builds ``decoder_logits`` (``nn.Linear(D, p*p*K)``) and the
    ``codebook`` buffer when ``head_type="categorical"``, and ``decoder_logits = None`` otherwise."""

    decoder_logits: nn.Linear | None
    codebook: torch.Tensor
    _codebook_ready: bool = False

    def set_codebook(self, codebook: torch.Tensor) -> None:
        """Set the categorical head's codes, ``codebook_size x in_channels`` in the normalised latent space:
        ``projector.vq_codebook(vae)`` of the ``VQModel`` the model trains on."""
        if self.decoder_logits is None:
            raise ValueError(f"set_codebook is for head_type='categorical'; this model has {self.config.head_type!r}.")
        check_codebook(codebook, self.config.codebook_size, self.config.in_channels)
        with torch.no_grad():
            self.codebook.copy_(codebook.to(self.codebook.device, self.codebook.dtype))
        self._codebook_ready = True

    def checked_codebook(self) -> torch.Tensor:
        """The codebook, or a ``ValueError`` while it is unset (all zeros; checked once, sparing a sync per step)."""
        if not self._codebook_ready:
            if not self.codebook.any():
                raise ValueError(
                    "This categorical LMDModel's codebook is unset (all zeros): call "
                    "model.set_codebook(diffusers_lmd.projector.vq_codebook(vae)) with its VQModel projector first."
                )
            self._codebook_ready = True
        return self.codebook

    def code_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The categorical head on decoder ``features`` (``B x L x D``): ``B x L x p*p x codebook_size`` logits, a
        token's positions in row-major order."""
        return self.decoder_logits(features).unflatten(-1, (self.patch_size**2, self.config.codebook_size))
