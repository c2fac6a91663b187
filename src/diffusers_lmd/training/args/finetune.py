"""The flags of ``training/finetune_classifier.py`` beyond the data, training, pretrained and label flags: the
classifier, its evaluation and its latent cache, with the defaults that script sets."""

from __future__ import annotations

import argparse

from .common import check_training_args


def add_finetune_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The classifier's flags, and fine-tuning's defaults of the shared flags."""
    model = parser.add_argument_group("classifier")
    model.add_argument(
        "--pretrained_path",
        type=str,
        required=True,
        help="A saved LMDPipeline (folder or Hub repo id), an LMDModel (with --projector_path) or an "
        "LMDForImageClassification.",
    )
    model.add_argument(
        "--projector_path",
        type=str,
        default=None,
        help="The VQModel/AutoencoderKL (folder, Hub repo or pipeline) for an LMDModel; replaces a pipeline's vae/.",
    )
    model.add_argument("--pooling", type=str, default="mean", choices=["mean", "cls"], help="Token pooling.")
    model.add_argument("--classifier_dropout", type=float, default=0.0, help="Dropout before the linear head.")
    model.add_argument(
        "--layer_decay",
        type=float,
        default=0.75,
        help="Layer-wise LR decay (MAE fine-tuning: 0.65 for ViT-B); block i gets decay^(depth - i). 1 disables it.",
    )
    model.add_argument(
        "--eval_steps",
        type=int,
        default=None,
        help="Measure top-1/top-5 validation accuracy every N optimiser steps (default: --validation_steps); "
        "MAT@k is computed from these points.",
    )
    model.add_argument("--eval_batch_size", type=int, default=256, help="Batch size for evaluation.")
    model.add_argument("--encode_batch_size", type=int, default=64, help="Images per projector call when caching.")
    model.add_argument(
        "--latent_cache_dir",
        type=str,
        default=None,
        help="Where latent caches live (default: $HF_DATASETS_CACHE/diffusers_lmd_latents), shared with train_lmd.py.",
    )
    model.add_argument(
        "--max_train_seconds",
        type=float,
        default=None,
        help="Stop after this many seconds of training (evaluation excluded), e.g. to compare backbones fairly.",
    )
    parser.set_defaults(
        output_dir="lmd-classifier",
        resolution=32,
        train_batch_size=64,
        num_train_epochs=10,
        learning_rate=1e-3,
        adam_beta2=0.999,
        validation_steps=50,
    )
    return parser


def check_finetune_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the training flags (a ``ValueError``) and the fine-tuning ones (an argparse error, exit status 2);
    ``--eval_steps`` defaults to ``--validation_steps``."""
    check_training_args(args)
    args.eval_steps = args.eval_steps or args.validation_steps
    if args.eval_steps < 1:
        parser.error(f"--eval_steps must be at least 1, got {args.eval_steps}.")
    if args.random_flip:
        parser.error("--random_flip is not supported: fine-tuning reads latents encoded once, without flips.")
