"""The flags of ``training/train_lmd.py``: data + shared training flags + LMD's own."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..data import add_data_args
from ..models import LMD_PRESETS
from ..schedulers import MASK_SCHEDULES
from .args import add_training_args, check_training_args

# Architecture flags that override the preset when given.
MODEL_OVERRIDES = (
    ("patch_size", int, "Side of a latent patch (one token per patch)."),
    ("hidden_size", int, "Encoder width."),
    ("num_layers", int, "Encoder blocks."),
    ("num_attention_heads", int, "Encoder attention heads."),
    ("decoder_hidden_size", int, "Decoder width."),
    ("decoder_num_layers", int, "Decoder blocks."),
    ("decoder_num_attention_heads", int, "Decoder attention heads."),
    ("mlp_ratio", float, "MLP width as a multiple of the block width."),
)


def add_lmd_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """LMD's own flags: projector, architecture, mask-ratio schedule, latent cache and speed options."""
    group = parser.add_argument_group("LMD")
    group.add_argument(
        "--projector_path",
        type=str,
        default=None,
        help="The frozen projector: a folder saved by VQModel/AutoencoderKL.save_pretrained (e.g. by "
        "training/train_projector.py), an LMD pipeline folder (its vae/ is used), or a Hub id.",
    )
    group.add_argument("--projector_subfolder", type=str, default=None, help="Subfolder of --projector_path.")
    group.add_argument(
        "--estimate_latent_stats",
        action="store_true",
        help="Re-estimate the projector's scaling_factor/shift_factor on the training images before training.",
    )
    group.add_argument("--preset", type=str, default="small", choices=sorted(LMD_PRESETS), help="LMDModel size.")
    for name, kind, text in MODEL_OVERRIDES:
        group.add_argument(f"--{name}", type=kind, default=None, help=f"{text} Default: the preset's.")
    group.add_argument(
        "--mask_schedule", type=str, default="cosine", choices=MASK_SCHEDULES, help="How the mask ratio rises."
    )
    group.add_argument("--mask_ratio_min", type=float, default=0.15, help="Mask ratio at the first step.")
    group.add_argument("--mask_ratio_max", type=float, default=0.75, help="Mask ratio at the end of the rise.")
    group.add_argument(
        "--cache_latents",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Encode the training images once and reuse the latents (--no-cache_latents encodes every step).",
    )
    group.add_argument(
        "--latent_cache_dir",
        type=str,
        default=None,
        help="Where latent caches live (default: $HF_DATASETS_CACHE/diffusers_lmd_latents).",
    )
    group.add_argument("--encode_batch_size", type=int, default=64, help="Images per projector call when caching.")
    group.add_argument("--eval_batch_size", type=int, default=16, help="Images per batch in held-out evaluation.")
    group.add_argument("--compile", action="store_true", help="torch.compile the model (through Accelerate).")
    group.add_argument(
        "--gradient_checkpointing", action="store_true", help="Recompute activations in backward to save memory."
    )
    return parser


def build_lmd_parser(description: str = "Train an LMD model (Latent Masking Diffusion).") -> argparse.ArgumentParser:
    """The parser of ``train_lmd.py``: data flags, shared training flags, LMD flags."""
    parser = argparse.ArgumentParser(description=description)
    add_data_args(parser)
    add_training_args(parser)
    add_lmd_args(parser)
    parser.set_defaults(output_dir="lmd-model")
    return parser


def check_lmd_args(args: argparse.Namespace) -> None:
    """Raise a ``ValueError`` naming the first LMD or training flag that cannot work."""
    check_training_args(args)
    if not args.projector_path:
        raise ValueError(
            "--projector_path is required: a folder saved by VQModel/AutoencoderKL.save_pretrained. Train one "
            "with training/train_projector.py, or use the demo's assets/demo-projector."
        )
    if not 0.0 <= args.mask_ratio_min <= args.mask_ratio_max < 1.0:
        raise ValueError(
            f"Need 0 <= --mask_ratio_min <= --mask_ratio_max < 1, got {args.mask_ratio_min} and {args.mask_ratio_max}."
        )
    for name in ("encode_batch_size", "eval_batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")


def parse_lmd_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check ``train_lmd.py`` flags (``sys.argv`` when ``argv`` is ``None``)."""
    args = build_lmd_parser().parse_args(argv)
    check_lmd_args(args)
    return args
