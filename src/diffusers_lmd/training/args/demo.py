"""The flags of ``training/demo.py``: every ``train_lmd.py`` flag with the demo's defaults (a class-conditional LMD on
Fashion-MNIST through the committed projector), and the demo's own report flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .lmd import build_lmd_parser, check_lmd_args

# The demo's ViT: the "small" preset narrowed to width 128, 4 encoder + 2 decoder blocks (1.2 M parameters); the
# Fashion-MNIST benchmark presets train the same one.
DEMO_VIT = dict(
    hidden_size=128,
    num_layers=4,
    num_attention_heads=4,
    decoder_hidden_size=128,
    decoder_num_layers=2,
    decoder_num_attention_heads=4,
)


def demo_defaults(repo: Path) -> dict:
    """The demo's ``train_lmd.py`` settings; ``repo`` is the checkout holding ``assets/``."""
    return dict(
        projector_path=str(repo / "assets" / "fashion-mnist-projector"),
        output_dir="demo-output",
        dataset_name="fashion_mnist",
        resolution=32,
        pad_to_resolution=True,
        label_column="label",
        conditioning_dropout_prob=0.1,
        # Both heads: the diffusion head (one noised copy per token, width 64: ~1.3x an MSE step) draws the samples,
        # the MSE head (mse_loss_weight) gives the mean that reconstruction and the held-out PSNR use.
        head_type="diffusion",
        mse_loss_weight=1.0,
        diffusion_batch_mul=1,
        diffusion_head_width=64,
        sampling_temperature=0.7,  # the saved pipeline's default: 0.6-0.8 drew better than 1 (docs/training.md)
        # Mask ratios near generation's (every token masked at the first reveal step): truncated normal on [0.7, 1].
        mask_schedule="truncnorm",
        mask_ratio_min=0.7,
        mask_ratio_max=1.0,
        preset="small",
        **DEMO_VIT,
        max_train_samples=20000,  # a third of the split: encoding all 60,000 once would take ~3 of the demo's minutes
        train_batch_size=64,
        max_train_steps=2400,
        learning_rate=1e-3,
        lr_warmup_steps=100,
        checkpointing_steps=1000,
        checkpoints_total_limit=1,
        validation_steps=1_000_000,  # one held-out evaluation, at the end
        max_eval_samples=1000,
        report_to="none",
    )


def add_demo_args(parser: argparse.ArgumentParser, repo: Path) -> argparse.ArgumentParser:
    """The demo report's flags: the classifier that scores the samples, guidance, and where figures are copied."""
    demo = parser.add_argument_group("demo")
    demo.add_argument(
        "--classifier_path",
        default=str(repo / "assets" / "fashion-mnist-classifier"),
        help="The feature classifier that scores generated samples (conditional accuracy); 'none' skips it.",
    )
    demo.add_argument(
        "--guidance_scale",
        type=float,
        default=None,
        help="Classifier-free guidance of the samples (default: the pipeline's default call's).",
    )
    demo.add_argument(
        "--accuracy_samples_per_class",
        type=int,
        default=100,
        help="Samples scored per class (conditional accuracy, FID, precision / recall).",
    )
    demo.add_argument("--figures_dir", default=None, help="Also copy the figures here (e.g. docs/images).")
    return parser


def parse_demo_args(argv: Sequence[str] | None, description: str | None, repo: Path) -> argparse.Namespace:
    """Parse and check the demo's flags (``sys.argv`` when ``argv`` is ``None``). ``--train_data_dir`` without
    ``--dataset_name`` replaces the default data; the latent cache defaults to ``{output_dir}/latent_cache``."""
    parser = build_lmd_parser(description=description)
    parser.set_defaults(**demo_defaults(repo))
    add_demo_args(parser, repo)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.train_data_dir is not None and "--dataset_name" not in argv:
        args.dataset_name = None  # a folder of images (or of Fashion-MNIST's IDX files) replaces the default data
    if args.latent_cache_dir is None:
        args.latent_cache_dir = str(Path(args.output_dir) / "latent_cache")
    check_lmd_args(args)
    return args
