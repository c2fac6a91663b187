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

import shlex
import sys

import torch

from diffusers_lmd.data import fashion_mnist_data_config, load_labelled_tensors
from diffusers_lmd.environment import describe_hardware
from diffusers_lmd.metrics import train_feature_classifier
from diffusers_lmd.metrics.feature_training import write_model_card
from diffusers_lmd.training.args import parse_feature_classifier_args


def main(argv=None) -> None:
    args = parse_feature_classifier_args(argv, description=__doc__)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    data = fashion_mnist_data_config(max_train_samples=args.max_train_samples or None)
    train, test, names = load_labelled_tensors(data)
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
