"""The flags of ``training/train_feature_classifier.py``: the Fashion-MNIST CNN whose features the generation
metrics use (its data is fixed: Fashion-MNIST at 32 px)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import HelpFormatter


def parse_feature_classifier_args(
    argv: Sequence[str] | None = None, description: str | None = None
) -> argparse.Namespace:
    """Parse ``train_feature_classifier.py`` flags (``sys.argv`` when ``argv`` is ``None``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="fashion-mnist-classifier", help="Where the model folder goes.")
    parser.add_argument("--epochs", type=int, default=3, help="Passes over the 60,000 training images.")
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="Peak rate of the one-cycle schedule.")
    parser.add_argument("--block_channels", type=int, nargs="+", default=[16, 32, 64], help="Conv stage widths.")
    parser.add_argument("--feature_dim", type=int, default=128, help="Width of the penultimate (FID) features.")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Train on a subset (smoke tests).")
    parser.add_argument("--num_threads", type=int, default=None, help="CPU threads (torch's default).")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)
