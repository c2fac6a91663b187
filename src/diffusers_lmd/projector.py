"""The frozen projector: a diffusers ``VQModel`` or ``AutoencoderKL`` mapping images to normalised latents.

Normalisation follows the diffusers convention: ``(z - shift_factor) * scaling_factor``, both read from
the projector's own config, so a saved projector folder carries everything needed to reproduce the latents
LMD was trained on. ``AutoencoderKL`` has a ``shift_factor`` config entry; for a ``VQModel`` the estimated shift
is stored under the same name as an extra config entry, which ``save_pretrained`` writes and
``from_pretrained`` brings back (a missing entry means no shift).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import torch
from diffusers import AutoencoderKL, VQModel

from .masking import check_patchable

Projector = VQModel | AutoencoderKL

_VQ_SHIFT_WARNING = re.compile(r"^The config attributes \{'shift_factor': [^,{}]+\} were passed to VQModel, ")


class _VQShiftFactorFilter(logging.Filter):
    """Drop diffusers' warning that a ``VQModel`` config's ``shift_factor`` "will be ignored": this package reads it
    (and nothing else in the config is hidden: a warning naming any other key still shows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _VQ_SHIFT_WARNING.match(record.getMessage())


logging.getLogger("diffusers.configuration_utils").addFilter(_VQShiftFactorFilter())


def _check_projector(vae: object) -> None:
    if not isinstance(vae, (VQModel, AutoencoderKL)):
        raise TypeError(f"The projector must be a diffusers VQModel or AutoencoderKL, got {type(vae).__name__}.")


def latent_channels(vae: Projector) -> int:
    """Channels of the latent the projector produces."""
    _check_projector(vae)
    return vae.config.latent_channels


def downsample_factor(vae: Projector) -> int:
    """Pixels per latent cell along a side: ``2 ** (number of encoder blocks - 1)``."""
    _check_projector(vae)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _raw_latents(vae: Projector, images: torch.Tensor) -> torch.Tensor:
    """Un-normalised latents: VQ pre-quantisation latents, or the KL posterior's mode."""
    if isinstance(vae, VQModel):
        return vae.encode(images).latents
    return vae.encode(images).latent_dist.mode()


def _normalisation(vae: Projector) -> tuple[float, float]:
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return float(vae.config.scaling_factor), float(shift)


@torch.no_grad()
def encode_images(vae: Projector, images: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` (``B x 3 x H x W``) -> normalised latents ``(z - shift) * scale``."""
    _check_projector(vae)
    if images.ndim != 4 or images.shape[1] != vae.config.in_channels:
        raise ValueError(
            f"images must be B x {vae.config.in_channels} x H x W in [-1, 1], got shape {tuple(images.shape)}."
        )
    images = images.to(device=vae.device, dtype=vae.dtype)
    scale, shift = _normalisation(vae)
    return (_raw_latents(vae, images) - shift) * scale


@torch.no_grad()
def decode_latents(vae: Projector, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> images in about ``[-1, 1]``; a ``VQModel`` quantises before decoding."""
    _check_projector(vae)
    scale, shift = _normalisation(vae)
    z = latents.to(device=vae.device, dtype=vae.dtype) / scale + shift
    return vae.decode(z).sample


def vq_codebook(vae: Projector) -> torch.Tensor:
    """A ``VQModel``'s codebook in the normalised latent space, ``K x latent_channels``: code ``k``'s latent is
    ``(e_k - shift) * scale``, exactly what decoding quantises back to code ``k``. A categorical head predicts these
    codes; an ``AutoencoderKL`` has none, hence the ``ValueError``."""
    _check_projector(vae)
    if not isinstance(vae, VQModel):
        raise ValueError(
            f"A codebook (for head_type='categorical' or a token model) needs a VQModel projector; got "
            f"{type(vae).__name__}, whose latents are continuous: use head_type='mse' or 'diffusion' with it."
        )
    scale, shift = _normalisation(vae)
    return (vae.quantize.embedding.weight.detach().float() - shift) * scale


def nearest_codes(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Normalised latents ``B x C x H x W`` -> the index of the nearest code at each position, ``B x H x W`` (long):
    the codes ``VQModel.quantize`` picks, since normalising moves the latents and the codebook alike."""
    if latents.ndim != 4 or latents.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"latents must be B x {codebook.shape[1]} x H x W for a codebook of {codebook.shape[1]}-dim codes, got "
            f"{tuple(latents.shape)}."
        )
    flat = latents.detach().float().permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
    codebook = codebook.to(flat.device, flat.dtype)
    # |z - e|^2 = |z|^2 - 2 z.e + |e|^2; the |z|^2 term is the same for every code.
    distances = codebook.pow(2).sum(dim=1)[None] - 2 * flat @ codebook.T
    b, _, h, w = latents.shape
    return distances.argmin(dim=1).view(b, h, w)


@torch.no_grad()
def estimate_latent_stats(
    vae: Projector, images: Iterable[torch.Tensor], max_batches: int | None = None
) -> tuple[float, float]:
    """Estimate ``(scaling_factor, shift_factor)`` so normalised latents have zero mean and unit variance.

    ``images`` yields batches in ``[-1, 1]``: tensors, dicts with ``pixel_values``, or ``(images, ...)``
    tuples as a ``TensorDataset`` loader gives. Uses a running sum in float64 so any number of batches fits.
    """
    _check_projector(vae)
    total, total_sq, count = 0.0, 0.0, 0
    for i, batch in enumerate(images):
        if max_batches is not None and i >= max_batches:
            break
        if isinstance(batch, dict):
            batch = batch["pixel_values"]
        elif isinstance(batch, (list, tuple)):
            batch = batch[0]
        z = _raw_latents(vae, batch.to(device=vae.device, dtype=vae.dtype)).double()
        total += z.sum().item()
        total_sq += z.pow(2).sum().item()
        count += z.numel()
    if count == 0:
        raise ValueError("estimate_latent_stats got no images: the dataloader is empty.")
    mean = total / count
    std = max((total_sq / count - mean**2), 1e-12) ** 0.5
    return 1.0 / std, mean


def set_latent_stats(vae: Projector, scaling_factor: float, shift_factor: float = 0.0) -> None:
    """Store the statistics in the projector's config as ``scaling_factor`` and ``shift_factor``, for a
    ``VQModel`` too (method.md §2: ``(z - shift) * scale``), where ``save_pretrained`` / ``from_pretrained`` keep
    them."""
    _check_projector(vae)
    if scaling_factor <= 0:
        raise ValueError(f"scaling_factor must be positive, got {scaling_factor}.")
    vae.register_to_config(scaling_factor=float(scaling_factor), shift_factor=float(shift_factor))


def check_compatible(vae: Projector, model, image_size: int | tuple[int, int] | None = None) -> None:
    """Raise a ``ValueError`` when the projector's latents cannot feed ``model`` (an ``LMDModel``)."""
    channels = latent_channels(vae)
    if channels != model.config.in_channels:
        raise ValueError(
            f"The projector makes {channels}-channel latents but the LMDModel expects in_channels="
            f"{model.config.in_channels}: train the LMDModel for this projector or pick the matching projector."
        )
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        f = downsample_factor(vae)
        if h % f or w % f:
            raise ValueError(f"Image size {h}x{w} is not divisible by the projector's downsampling factor {f}.")
        check_patchable(h // f, w // f, model.config.patch_size)
