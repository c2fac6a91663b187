"""Held-out reconstruction quality, measured the same way by training, benchmarks and tests (SPEC §5).

PSNR is computed in pixel space over the whole image, after masking a fixed, seeded 75% of each image's
latent tokens, predicting them, keeping the visible latents exactly as encoded and decoding through the
projector. Image ``i`` of an evaluation set always gets the same mask (seeded by ``seed`` and ``i`` only),
whatever the batch size or the method, so numbers from different runs and methods are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .masking import keep_visible, random_mask, token_mask_to_latent_mask
from .metrics import psnr
from .models import LMDModel
from .projector import Projector, decode_latents, downsample_factor, encode_images

EVAL_MASK_RATIO = 0.75
EVAL_SEED = 0


@dataclass
class ReconstructionMetrics:
    """Result of :func:`evaluate_reconstruction`.

    Args:
        psnr: mean per-image PSNR in dB over the evaluation images.
        per_image_psnr: one value per image, in dataset order.
        mask_ratio / seed: the evaluation mask's ratio and seed.
    """

    psnr: float
    per_image_psnr: list[float]
    mask_ratio: float
    seed: int


def eval_masks(indices, num_tokens: int, mask_ratio: float = EVAL_MASK_RATIO, seed: int = EVAL_SEED) -> torch.Tensor:
    """The fixed masks of images ``indices`` (``B x L``): image ``i``'s depends only on ``seed`` and ``i``."""
    rows = [
        random_mask(1, num_tokens, mask_ratio, torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
        for i in indices
    ]
    return torch.cat(rows)


@torch.no_grad()
def reconstruct(model: LMDModel, vae: Projector, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` with masked tokens predicted (visible latents kept), decoded and clamped."""
    latents = encode_images(vae, images)
    model_dtype = next(model.parameters()).dtype
    # A tuple, so a model wrapped by Accelerate's mixed-precision forward works too; no loss: it is not training.
    prediction = model(latents.to(model_dtype), mask=mask.to(latents.device), return_dict=False, return_loss=False)[0]
    completed = keep_visible(latents, prediction, mask, model.config.patch_size)
    return decode_latents(vae, completed).float().clamp(-1.0, 1.0)


def masked_images(images: torch.Tensor, mask: torch.Tensor, patch_pixels: int, fill: float = 0.0) -> torch.Tensor:
    """``images`` with every masked token's pixel footprint set to ``fill`` (grey), for display."""
    pixel_mask = token_mask_to_latent_mask(mask, patch_pixels, images.shape[2], images.shape[3]).to(images.device)
    return torch.where(pixel_mask > 0, torch.full_like(images, fill), images)


def _batches(dataset, batch_size: int, max_images: int | None):
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for start in range(0, count, batch_size):
        indices = list(range(start, min(start + batch_size, count)))
        yield indices, torch.stack([dataset[i]["pixel_values"] for i in indices])


@torch.no_grad()
def evaluate_reconstruction(
    model: LMDModel,
    vae: Projector,
    dataset: torch.utils.data.Dataset,
    *,
    mask_ratio: float = EVAL_MASK_RATIO,
    seed: int = EVAL_SEED,
    batch_size: int = 16,
    max_images: int | None = None,
) -> ReconstructionMetrics:
    """Mean pixel-space PSNR of masked reconstructions over ``dataset`` (items ``{"pixel_values": 3xHxW}``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = []
    try:
        for indices, images in _batches(dataset, batch_size, max_images):
            images = images.to(device)
            f = downsample_factor(vae)
            mask = eval_masks(indices, model.num_tokens(images.shape[2] // f, images.shape[3] // f), mask_ratio, seed)
            scores.append(psnr(reconstruct(model, vae, images, mask.to(device)), images.float()).cpu())
    finally:
        model.train(was_training)
    if not scores:
        raise ValueError("evaluate_reconstruction got an empty evaluation dataset.")
    per_image = torch.cat(scores)
    return ReconstructionMetrics(float(per_image.mean()), per_image.tolist(), mask_ratio, seed)


@torch.no_grad()
def reconstruction_grid(
    model: LMDModel,
    vae: Projector,
    dataset: torch.utils.data.Dataset,
    *,
    num_images: int = 8,
    mask_ratio: float = EVAL_MASK_RATIO,
    seed: int = EVAL_SEED,
) -> np.ndarray:
    """An ``H x W x 3`` uint8 grid: originals, masked inputs and reconstructions as three rows."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        indices, images = next(_batches(dataset, num_images, num_images))
        images = images.to(device).float()
        f = downsample_factor(vae)
        mask = eval_masks(indices, model.num_tokens(images.shape[2] // f, images.shape[3] // f), mask_ratio, seed)
        recon = reconstruct(model, vae, images, mask.to(device))
        masked = masked_images(images, mask, f * model.config.patch_size)
    finally:
        model.train(was_training)
    rows = [torch.cat(list(row), dim=2) for row in (images, masked, recon.to(images.device))]
    grid = torch.cat(rows, dim=1)  # 3 x (3H) x (N W)
    return ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
