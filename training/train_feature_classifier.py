#!/usr/bin/env python
"""Train the Fashion-MNIST CNN whose penultimate features the generation metrics use (FID on a Fashion-MNIST
classifier's features, not comparable to Inception FID; conditional accuracy; precision / recall).

    python training/train_feature_classifier.py --output_dir assets/fashion-mnist-classifier

Reads Fashion-MNIST (Debian's IDX files, or those in ``$FASHION_MNIST_DIR``) at 32 px (28x28 centred on a black
canvas, RGB) through the library's data flags, trains
(:func:`diffusers_lmd.metrics.train_feature_classifier`), saves a ``from_pretrained`` folder (safetensors) and
writes its model card with the command, the CPU time and the test accuracy.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from diffusers_lmd.data import fashion_mnist_data_args, load_labelled_tensors
from diffusers_lmd.environment import describe_hardware
from diffusers_lmd.metrics import train_feature_classifier
from diffusers_lmd.metrics.feature_training import write_model_card


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    extra = ["--max_train_samples", str(args.max_train_samples)] if args.max_train_samples else []
    train, test, names = load_labelled_tensors(fashion_mnist_data_args(extra))
    model, metrics = train_feature_classifier(
        train,
        test,
        names,
        epochs=args.epochs,
        batch_size=args.train_batch_size,
        learning_rate=args.learning_rate,
        block_channels=tuple(args.block_channels),
        feature_dim=args.feature_dim,
        seed=args.seed,
    )
    model.save_pretrained(args.output_dir, safe_serialization=True)
    command = shlex.join(
        ["python", "training/train_feature_classifier.py", *(argv if argv is not None else sys.argv[1:])]
    )
    card = write_model_card(
        args.output_dir, {**metrics, "feature_dim": args.feature_dim}, command, describe_hardware("cpu")
    )
    print(f"test accuracy {metrics['test_accuracy']:.4f}; saved to {args.output_dir} ({card})")


if __name__ == "__main__":
    main()
