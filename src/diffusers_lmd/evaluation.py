"""Held-out reconstruction quality, measured the same way by training, benchmarks and tests (method.md §5).

PSNR is computed in pixel space over the whole image, after masking a fixed, seeded 75% of each image's
latent tokens, predicting them, keeping the visible latents exactly as encoded and decoding through the
projector. Image ``i`` of an evaluation set always gets the same mask (seeded by ``seed`` and ``i`` only),
whatever the batch size or the method, so numbers from different runs and methods are comparable. The reference
floors (:func:`latent_reference_psnr`, :func:`pixel_reference_psnr`) are what a predictor that learned nothing
about structure scores under the same masks: the demo report and the efficiency benchmark read results beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .masking import keep_visible, patchify, random_mask, token_mask_to_latent_mask
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


def eval_batches(images: torch.Tensor, token_pixels: int, batch_size: int):
    """``(batch, mask)`` pairs over the image tensor ``images`` with the fixed evaluation masks on tokens of
    ``token_pixels`` pixels (image ``i`` gets :func:`eval_masks`' mask ``i``, whatever the batch size)."""
    num_tokens = (images.shape[2] // token_pixels) * (images.shape[3] // token_pixels)
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        mask = eval_masks(range(start, start + batch.shape[0]), num_tokens, EVAL_MASK_RATIO, EVAL_SEED)
        yield batch, mask.to(batch.device)


def masked_patch_mse(
    prediction: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """Per-image mean squared error between ``prediction`` and ``latents`` over the patches ``mask`` masks (``B``)."""
    per_token = (patchify(prediction.float(), patch_size) - patchify(latents.float(), patch_size)).pow(2).mean(-1)
    return (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)


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


def _visible_mean(x: torch.Tensor, mask: torch.Tensor, token_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked, mean)``: where ``x`` (``B x C x H x W``) is masked by ``mask`` (tokens of ``token_side`` cells),
    and each image's per-channel mean over its visible cells (``B x C x 1 x 1``)."""
    masked = token_mask_to_latent_mask(mask, token_side, x.shape[2], x.shape[3]).to(x.device) > 0
    visible = (~masked).to(x.dtype)
    mean = (x * visible).sum((2, 3), keepdim=True) / visible.sum((2, 3), keepdim=True).clamp(min=1)
    return masked, mean


@torch.no_grad()
def latent_reference_psnr(vae: Projector, images: torch.Tensor, patch_size: int, batch_size: int = 32) -> dict:
    """Two fixed points of the latent path under the evaluation masks, to read latent methods against.

    ``projector``: PSNR with every latent as encoded (a perfect latent predictor: the projector's own ceiling).
    ``mean_latent``: PSNR with every masked latent set to the mean of the image's visible latents, per channel (a
    predictor that learned nothing about structure); ``mean_latent_mse`` is its masked-latent MSE.
    """
    scores = {"projector": [], "mean_latent": []}
    errors = []
    for batch, mask in eval_batches(images.to(vae.device), downsample_factor(vae) * patch_size, batch_size):
        latents = encode_images(vae, batch)
        _, mean = _visible_mean(latents, mask, patch_size)
        fill = mean.expand_as(latents)
        errors.append(masked_patch_mse(fill, latents, mask, patch_size).cpu())
        mean_fill = keep_visible(latents, fill, mask, patch_size)
        for key, completed in (("projector", latents), ("mean_latent", mean_fill)):
            decoded = decode_latents(vae, completed).float().clamp(-1.0, 1.0)
            scores[key].append(psnr(decoded, batch.float()).cpu())
    result = {key: float(torch.cat(values).mean()) for key, values in scores.items()}
    return {**result, "mean_latent_mse": float(torch.cat(errors).mean())}


@torch.no_grad()
def pixel_reference_psnr(images: torch.Tensor, token_pixels: int, batch_size: int = 32) -> dict:
    """The pixel methods' floor under the evaluation masks: PSNR of a predictor that learned only colour.

    ``mean_pixel`` fills every masked patch of ``token_pixels`` pixels with the mean colour of the image's visible
    pixels. A method scoring near it has learned where the image is red, not what is there.
    """
    scores = []
    for batch, mask in eval_batches(images, token_pixels, batch_size):
        masked, mean = _visible_mean(batch, mask, token_pixels)
        scores.append(psnr(torch.where(masked, mean, batch).float(), batch.float()).cpu())
    return {"mean_pixel": float(torch.cat(scores).mean())}
