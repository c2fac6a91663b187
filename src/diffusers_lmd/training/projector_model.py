"""The projector being trained: its construction and a loss-returning wrapper.

The wrapper exists because Accelerate (and DDP) must see one ``forward`` that returns everything the loss
needs; ``VQModel.forward`` already returns the reconstruction and its codebook + commitment loss, and
``AutoencoderKL.forward`` drops the posterior, so for KL the wrapper encodes and decodes itself.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AutoencoderKL, VQModel
from torch import nn

from .projector_discriminator import PatchDiscriminator
from .projector_losses import kl_loss


def build_projector(args: argparse.Namespace) -> VQModel | AutoencoderKL:
    """A fresh ``VQModel`` or ``AutoencoderKL`` with the flags' architecture."""
    n = len(args.block_out_channels)
    common = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        latent_channels=args.latent_channels,
        norm_num_groups=args.norm_num_groups,
        sample_size=args.resolution,
        mid_block_add_attention=not args.no_mid_block_attention,
    )
    if args.projector_type == "vq":
        return VQModel(num_vq_embeddings=args.num_vq_embeddings, vq_embed_dim=args.vq_embed_dim, **common)
    return AutoencoderKL(**common)


def build_discriminator(args: argparse.Namespace) -> PatchDiscriminator:
    """The patch discriminator with the flags' size; its GroupNorm groups adapt to the width."""
    groups = next(g for g in (8, 4, 2, 1) if args.disc_channels % g == 0)
    return PatchDiscriminator(base_channels=args.disc_channels, num_layers=args.disc_layers, norm_num_groups=groups)


@torch.no_grad()
def init_codebook_from_data(vq: VQModel, images: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Set the codebook to randomly chosen encoder outputs of ``images`` (a data-dependent initialisation).

    diffusers initialises codes within ``+-1/num_vq_embeddings`` of zero, far from the encoder's outputs, so
    the first batches pick a handful of codes and the rest never train (codebook collapse: on the demo data,
    under 1% of a 1024-code book in use, against over 80% with this initialisation).
    """
    if not isinstance(vq, VQModel):
        raise TypeError(f"init_codebook_from_data needs a VQModel, got {type(vq).__name__}.")
    latents = vq.encode(images.to(device=vq.device, dtype=vq.dtype)).latents
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    codebook = vq.quantize.embedding.weight
    num_codes = codebook.shape[0]
    if len(vectors) >= num_codes:
        chosen = vectors[torch.randperm(len(vectors), generator=generator)[:num_codes]]
    else:  # fewer vectors than codes: repeat them, jittered so that no two codes coincide
        picks = torch.randint(len(vectors), (num_codes,), generator=generator)
        noise = torch.randn(num_codes, vectors.shape[1], generator=generator).to(vectors) * 0.01 * vectors.std()
        chosen = vectors[picks] + noise
    codebook.copy_(chosen)


class AutoencoderWithLoss(nn.Module):
    """``forward(images) -> (reconstruction, regulariser)`` for a ``VQModel`` or ``AutoencoderKL``.

    For a ``VQModel`` the regulariser is diffusers' own ``commit_loss`` with the quantiser switched to
    ``legacy=False``: diffusers' legacy default puts ``beta`` on the codebook term, whereas SPEC eq. 4 is
    ``||sg[E(x)] - z_q||^2 + beta ||sg[z_q] - E(x)||^2``. Inference is unaffected by the switch.
    """

    def __init__(self, vae: VQModel | AutoencoderKL, commitment_beta: float = 0.25, kl_weight: float = 1e-6):
        super().__init__()
        if not isinstance(vae, (VQModel, AutoencoderKL)):
            raise TypeError(f"Can train a diffusers VQModel or AutoencoderKL, got {type(vae).__name__}.")
        self.vae = vae
        self.kl_weight = kl_weight
        if isinstance(vae, VQModel):
            vae.quantize.legacy = False
            vae.quantize.beta = commitment_beta

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight, where the adaptive adversarial weight is measured."""
        return self.vae.decoder.conv_out.weight

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.vae, VQModel):
            out = self.vae(images)
            return out.sample, out.commit_loss.mean()
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        return reconstruction, self.kl_weight * kl_loss(posterior, images[0].numel())
