"""Does the classifier-feature FID rank what it should? Degrade real images in known ways and score them.

Real training images against the test split give the metric's floor; blurring, adding noise or keeping one
class must each score worse, and more so the stronger the degradation. The generation benchmark records these
beside its rows, and the tests assert the order on the committed classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .generation import GenerationScorer

BLUR_SIGMAS = (0.5, 1.0, 2.0)  # pixels
NOISE_SIGMAS = (0.1, 0.2, 0.4)  # on the [-1, 1] scale


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``B x C x H x W`` images (kernel radius ``3 sigma``, edges replicated)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def add_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Images plus seeded Gaussian noise of std ``sigma``, clamped to ``[-1, 1]``."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=images.dtype)
    return (images + sigma * noise).clamp(-1.0, 1.0)


def degradation_fids(
    scorer: GenerationScorer, images: torch.Tensor, labels: torch.Tensor, single_class: int = 0
) -> dict[str, float]:
    """FID against the scorer's reference of real ``images`` as they are, blurred, noised, and of one class only.

    Keys: ``real``, ``blur_<sigma>``, ``noise_<sigma>``, ``single_class`` (the images of class ``single_class``
    among ``images``: a set with no diversity).
    """
    result = {"real": scorer.fid(images)}
    for sigma in BLUR_SIGMAS:
        result[f"blur_{sigma:g}"] = scorer.fid(gaussian_blur(images, sigma))
    for sigma in NOISE_SIGMAS:
        result[f"noise_{sigma:g}"] = scorer.fid(add_noise(images, sigma))
    one = images[labels == single_class]
    if one.shape[0] < 2:
        raise ValueError(f"Class {single_class} has {one.shape[0]} images here: need at least 2 for its FID.")
    result["single_class"] = scorer.fid(one)
    return result
