"""The projector being trained: its command-line flags, its construction, and a loss-returning wrapper.

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
from .projector_losses import DISC_LOSSES, kl_loss

PROJECTOR_TYPES = ("vq", "kl")


def add_projector_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the projector architecture and of its losses (SPEC §2)."""
    model = parser.add_argument_group("projector")
    model.add_argument(
        "--projector_type", type=str, default="vq", choices=PROJECTOR_TYPES, help="VQModel or AutoencoderKL."
    )
    model.add_argument(
        "--block_out_channels",
        type=int,
        nargs="+",
        default=[64, 128, 128],
        help="Encoder/decoder block widths; n blocks downsample by f = 2^(n-1).",
    )
    model.add_argument("--layers_per_block", type=int, default=1, help="ResNet layers per block.")
    model.add_argument("--latent_channels", type=int, default=4, help="Channels of the latent LMD will model.")
    model.add_argument("--num_vq_embeddings", type=int, default=1024, help="VQ codebook size.")
    model.add_argument("--vq_embed_dim", type=int, default=None, help="Codebook vector size (default: latent).")
    model.add_argument(
        "--codebook_init",
        type=str,
        default="data",
        choices=("data", "default"),
        help="`data`: start the codebook from encoder outputs of training images (avoids codebook collapse); "
        "`default`: diffusers' near-zero initialisation.",
    )
    model.add_argument("--norm_num_groups", type=int, default=32, help="GroupNorm groups; must divide every width.")
    model.add_argument(
        "--no_mid_block_attention", action="store_true", help="Drop the attention layer of the middle blocks."
    )

    loss = parser.add_argument_group("projector losses")
    loss.add_argument("--commitment_beta", type=float, default=0.25, help="Weight of the VQ commitment term.")
    loss.add_argument("--kl_weight", type=float, default=1e-6, help="KL weight for --projector_type kl.")
    loss.add_argument(
        "--disc_start",
        type=int,
        default=1000,
        help="Optimiser step at which the discriminator and its loss start (a warm-up of plain reconstruction).",
    )
    loss.add_argument(
        "--disc_weight", type=float, default=0.5, help="Factor on the adaptive adversarial weight; 0 disables the GAN."
    )
    loss.add_argument("--disc_loss", type=str, default="hinge", choices=DISC_LOSSES, help="Adversarial loss.")
    loss.add_argument("--disc_channels", type=int, default=64, help="Width of the discriminator's first layer.")
    loss.add_argument("--disc_layers", type=int, default=3, help="Stride-2 layers of the patch discriminator.")
    loss.add_argument(
        "--disc_learning_rate", type=float, default=None, help="Discriminator learning rate (default: the same)."
    )
    loss.add_argument(
        "--color_augment",
        action="store_true",
        help="Shuffle each training image's RGB channels at random: teaches a projector trained on few photos to "
        "keep colours it has not seen.",
    )
    loss.add_argument(
        "--saturation_jitter",
        type=float,
        default=0.0,
        help="Scale each training image's saturation by a random factor in [1 - s, 1 + s].",
    )
    loss.add_argument(
        "--stats_max_batches",
        type=int,
        default=64,
        help="Training batches used to estimate the latent scaling_factor (and shift_factor) at the end.",
    )
    return parser


def check_projector_args(args: argparse.Namespace) -> None:
    """Raise a ``ValueError`` naming the first projector flag that cannot work."""
    widths = args.block_out_channels
    if not widths or min(widths) < 1:
        raise ValueError(f"--block_out_channels must be positive widths, got {widths}.")
    bad = [w for w in widths if w % args.norm_num_groups]
    if bad:
        raise ValueError(f"--block_out_channels {bad} are not divisible by --norm_num_groups {args.norm_num_groups}.")
    factor = 2 ** (len(widths) - 1)
    if args.resolution % factor:
        raise ValueError(
            f"--resolution {args.resolution} is not divisible by the downsampling factor {factor} of "
            f"{len(widths)} blocks: pick a multiple of {factor} or fewer --block_out_channels."
        )
    for name in ("layers_per_block", "latent_channels", "num_vq_embeddings", "disc_channels", "disc_layers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    for name in ("commitment_beta", "kl_weight", "disc_weight"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be non-negative, got {getattr(args, name)}.")
    if not 0.0 <= args.saturation_jitter <= 1.0:
        raise ValueError(f"--saturation_jitter must be in [0, 1], got {args.saturation_jitter}.")
    if args.disc_start < 0:
        raise ValueError(f"--disc_start must be a step >= 0, got {args.disc_start}.")
    if args.disc_weight > 0 and args.resolution < 3 * 2**args.disc_layers:
        raise ValueError(
            f"--resolution {args.resolution} is too small for a {args.disc_layers}-layer patch discriminator "
            f"(needs {3 * 2**args.disc_layers}): lower --disc_layers."
        )


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
