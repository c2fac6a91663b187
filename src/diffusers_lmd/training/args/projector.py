"""The flags of ``training/train_projector.py``: data + shared training flags + the projector's architecture and
losses, with the autoencoder/GAN defaults that script sets."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import HelpFormatter, add_training_args, flag_values
from .data import add_data_args

PROJECTOR_TYPES = ("vq", "kl")
DISC_LOSSES = ("hinge", "vanilla")

# The flags that are build_projector's parameters of the same name (--no_mid_block_attention is the one negated).
ARCHITECTURE_FLAGS = (
    "projector_type",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "num_vq_embeddings",
    "vq_embed_dim",
    "norm_num_groups",
    "resolution",
)


def add_projector_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the projector architecture and of its losses (method.md §2)."""
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


def projector_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`~diffusers_lmd.training.projector.build_projector` the flags set."""
    return dict(flag_values(args, *ARCHITECTURE_FLAGS), mid_block_attention=not args.no_mid_block_attention)


def build_projector_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``train_projector.py``: data flags, shared training flags, projector flags."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_data_args(parser)
    add_training_args(parser)
    add_projector_args(parser)
    # Autoencoder/GAN defaults (VQGAN's Adam betas; no weight decay) and a run short enough for a CPU.
    parser.set_defaults(
        output_dir="projector-output",
        learning_rate=1e-3,
        adam_beta1=0.5,
        adam_beta2=0.9,
        adam_weight_decay=0.0,
        lr_scheduler="cosine",
        train_batch_size=16,
        max_train_steps=2000,
        validation_steps=250,
    )
    return parser


def parse_projector_args(argv: Sequence[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """Parse ``train_projector.py`` flags (``sys.argv`` when ``argv`` is ``None``); the run checks them."""
    return build_projector_parser(description).parse_args(argv)
