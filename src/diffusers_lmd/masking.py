"""Patch and mask helpers shared by the model, the scheduler and the pipelines.

Tokens are latent patches in row-major order: token ``i`` covers patch row ``i // (W / p)`` and patch
column ``i % (W / p)``. A mask is ``B x L`` with 1 (or ``True``) = masked and 0 = visible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_patchable(height: int, width: int, patch_size: int) -> None:
    """Raise a ``ValueError`` unless a ``height x width`` latent splits into whole patches."""
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"Latent size {height}x{width} is not divisible by patch_size={patch_size}: resize the images "
            f"so that the latent sides are multiples of {patch_size}, or use another patch size."
        )


def patchify(latents: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x L x (p*p*C)`` with tokens in row-major patch order."""
    b, c, h, w = latents.shape
    p = patch_size
    x = latents.reshape(b, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # B, h/p, w/p, p, p, C
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``B x L x (p*p*C)`` -> ``B x C x H x W``."""
    b, _, d = tokens.shape
    p = patch_size
    c = d // (p * p)
    x = tokens.reshape(b, height // p, width // p, p, p, c)
    x = x.permute(0, 5, 1, 3, 2, 4)  # B, C, h/p, p, w/p, p
    return x.reshape(b, c, height, width)


def num_masked_tokens(num_tokens: int, mask_ratio: float) -> int:
    """How many of ``num_tokens`` a ratio masks: ``L - int(L * (1 - r))``, as in MAE."""
    return num_tokens - int(num_tokens * (1.0 - mask_ratio))


def check_mask_ratio(mask_ratio: float, allow_one: bool = False) -> None:
    """Raise a ``ValueError`` for a ratio outside ``[0, 1)`` (or ``[0, 1]`` when ``allow_one``)."""
    upper_ok = mask_ratio <= 1.0 if allow_one else mask_ratio < 1.0
    if not (0.0 <= mask_ratio and upper_ok):
        bound = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"mask_ratio must lie in {bound}, got {mask_ratio}.")


def random_mask(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A ``B x L`` float mask with exactly ``num_masked_tokens(L, r)`` ones per row, uniformly placed.

    As in diffusers' ``randn_tensor``, the noise is drawn on the generator's device, so a CPU generator gives
    the same mask on any accelerator; without a generator it is drawn on ``device``, sparing the training hot
    path a host-to-device copy (a stream sync on CUDA) every step.
    """
    noise_device = generator.device if generator is not None else torch.device(device or "cpu")
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=noise_device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    mask = (ranks >= num_tokens - num_masked_tokens(num_tokens, mask_ratio)).float()
    return mask.to(device) if device is not None else mask


def token_mask_to_latent_mask(mask: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Spread a ``B x L`` token mask over the latent grid: ``B x 1 x H x W``."""
    grid = mask.float().reshape(mask.shape[0], 1, height // patch_size, width // patch_size)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def pixel_mask_to_token_mask(pixel_mask: torch.Tensor, patch_pixels: int) -> torch.Tensor:
    """Map a ``B x 1 x H x W`` pixel mask (>= 0.5 = redo, diffusers' binarisation) to a ``B x L`` token mask.

    A token is masked if any pixel of its ``patch_pixels x patch_pixels`` footprint is (method.md §4);
    ``patch_pixels`` is the projector's downsampling factor times the LMD patch size.
    """
    hit = F.max_pool2d((pixel_mask >= 0.5).float(), kernel_size=patch_pixels, stride=patch_pixels)
    return hit.flatten(1)


def keep_visible(latents: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Take ``prediction`` at masked tokens and ``latents`` (exactly) at visible ones."""
    masked = token_mask_to_latent_mask(mask, patch_size, latents.shape[2], latents.shape[3]) > 0
    return torch.where(masked.to(latents.device), prediction.to(latents.dtype), latents)


def mask_tokens(
    tokens: torch.Tensor, mask: torch.Tensor, num_visible: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keep the visible tokens of each row, in their original order.

    Returns the kept tokens (``B x K x D``, K the most visible in any row), the permutation that puts
    visible tokens first, and a key-padding mask (``B x K``, True = real token) when rows differ in count.
    ``num_visible`` (the same for every row, known for random masks) avoids a device sync.
    """
    order = mask.to(torch.uint8).argsort(dim=1, stable=True)  # visible (0) first
    ragged = False
    if num_visible is None:
        row_visible = tokens.shape[1] - mask.sum(dim=1)
        num_visible = int(row_visible.max())
        ragged = bool((row_visible != num_visible).any())
    kept = torch.gather(tokens, 1, order[:, :num_visible, None].expand(-1, -1, tokens.shape[2]))
    padding = None
    if ragged:
        padding = torch.arange(num_visible, device=tokens.device)[None] < row_visible[:, None]
    return kept, order, padding
