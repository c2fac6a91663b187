"""Losses of projector pre-training (SPEC §2, paper eqs. 4-6).

``L = L_rec + L_reg + gamma * L_GAN`` for the autoencoder, where ``L_reg`` is the VQ codebook + commitment
term (or a KL term for ``AutoencoderKL``), and ``gamma`` balances the adversarial gradient against the
reconstruction gradient at the decoder's last layer. The discriminator minimises its own loss separately.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISC_LOSSES = ("hinge", "vanilla")
MAX_ADAPTIVE_WEIGHT = 1e4


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """The discriminator's loss: hinge, or ``vanilla`` = ``-[log D(x) + log(1 - D(x_hat))]`` (SPEC's L_ADV)."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())
    if kind == "vanilla":  # softplus(-l) = -log sigmoid(l), softplus(l) = -log(1 - sigmoid(l))
        return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())
    raise ValueError(f"Unknown discriminator loss {kind!r}; choose one of {DISC_LOSSES}.")


def generator_loss(fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """The autoencoder's adversarial loss on its reconstructions' logits (non-saturating for ``vanilla``)."""
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "vanilla":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"Unknown discriminator loss {kind!r}; choose one of {DISC_LOSSES}.")


def adaptive_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = MAX_ADAPTIVE_WEIGHT,
    eps: float = 1e-4,
) -> torch.Tensor:
    """``gamma = ||grad_G_last L_rec|| / (||grad_G_last L_GAN|| + eps)``, clamped to ``[0, max_weight]``, detached.

    ``last_layer`` is the decoder's last weight; the graph is kept so the caller can still backpropagate.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (gan_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``||x - x_hat||^2``, averaged over pixels (in float32, whatever the autocast dtype)."""
    return F.mse_loss(reconstruction.float(), images.float())


def kl_loss(posterior, num_pixels: int) -> torch.Tensor:
    """KL to a unit Gaussian per image, divided by its pixel count to match the per-pixel reconstruction loss,
    so ``kl_weight`` keeps Stable Diffusion's meaning (1e-6 relative to the per-image squared error sum)."""
    return posterior.kl().mean() / num_pixels
