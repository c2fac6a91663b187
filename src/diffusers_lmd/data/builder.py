"""Command-line data flags (diffusers example names) and the one function every script builds its data with."""

from __future__ import annotations

import argparse

import torch

from .demo import DEFAULT_EVAL_PHOTO, DEMO_PHOTO_NAMES, build_demo_datasets
from .image_dataset import ImageDataset, find_image_column, load_dataset_dict, split_train_eval


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the data flags to ``parser``; with neither ``--dataset_name`` nor ``--train_data_dir``, the demo data."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A dataset on the Hub or a local path, loaded with `datasets.load_dataset` (or `load_from_disk` for a "
        "saved dataset); `fashion_mnist` (or zalando-datasets/fashion_mnist) reads Debian's offline IDX files when "
        "installed. Without it and --train_data_dir, the built-in scikit-image demo data is used.",
    )
    group.add_argument("--dataset_config_name", type=str, default=None, help="The dataset's config, if it has several.")
    group.add_argument(
        "--train_data_dir",
        type=str,
        default=None,
        help="A folder of images, loaded as `imagefolder` (subfolders train/ and validation/ or test/ become splits), "
        "or a folder holding Fashion-MNIST's four IDX files.",
    )
    group.add_argument("--image_column", type=str, default=None, help="The column with images (default: detected).")
    group.add_argument("--resolution", type=int, default=64, help="Images are resized and cropped to this square.")
    group.add_argument(
        "--center_crop",
        action="store_true",
        help="Crop the centre after resizing; otherwise a seeded random crop, redrawn each epoch (train_lmd.py's "
        "latent cache keeps the one crop it encoded: see docs/training.md).",
    )
    group.add_argument(
        "--pad_to_resolution",
        action="store_true",
        help="Centre images no larger than --resolution on a black square instead of upscaling them (keeps "
        "Fashion-MNIST's 28x28 pixels exact on a 32x32 canvas).",
    )
    group.add_argument("--random_flip", action="store_true", help="Flip training images horizontally at random.")
    group.add_argument("--dataloader_num_workers", type=int, default=0, help="Data-loading worker processes.")
    group.add_argument("--max_train_samples", type=int, default=None, help="Keep only this many training images.")
    group.add_argument(
        "--eval_split_ratio",
        type=float,
        default=0.05,
        help="Share of the training images held out for evaluation when the dataset has no validation/test split.",
    )
    group.add_argument("--max_eval_samples", type=int, default=256, help="Evaluate on at most this many images.")
    group.add_argument(
        "--data_seed",
        type=int,
        default=0,
        help="Seeds the demo crops, the held-out slice and the random crops; separate from --seed so runs with "
        "different training seeds see the same data.",
    )
    group.add_argument("--demo_crops_per_photo", type=int, default=256, help="Demo data: crops drawn per photo.")
    group.add_argument("--demo_eval_crops", type=int, default=32, help="Demo data: crops of the held-out photo.")
    group.add_argument(
        "--demo_min_crop_scale",
        type=float,
        default=0.25,
        help="Demo data: smallest crop side as a share of the photo's shorter side.",
    )
    group.add_argument(
        "--demo_eval_photo",
        type=str,
        default=DEFAULT_EVAL_PHOTO,
        choices=DEMO_PHOTO_NAMES,
        help="Demo data: the photo held out of training for evaluation.",
    )
    return parser


def check_data_args(args: argparse.Namespace) -> None:
    """Raise a ``ValueError`` for data flags that cannot work together."""
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("Pass either --dataset_name or --train_data_dir, not both.")
    if args.resolution < 8:
        raise ValueError(f"--resolution must be at least 8 pixels, got {args.resolution}.")
    if args.max_train_samples is not None and args.max_train_samples < 1:
        raise ValueError(f"--max_train_samples must be >= 1, got {args.max_train_samples}.")
    if args.max_eval_samples is not None and args.max_eval_samples < 1:
        raise ValueError(f"--max_eval_samples must be >= 1, got {args.max_eval_samples}.")


def uses_demo_data(args: argparse.Namespace) -> bool:
    """True when no dataset flag was given, so the built-in demo data is used."""
    return args.dataset_name is None and args.train_data_dir is None


def build_datasets(args: argparse.Namespace) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """``(train_dataset, eval_dataset)`` of ``{"pixel_values": 3 x R x R in [-1, 1]}`` items, never flipped.

    Consumers apply ``--random_flip`` to training batches with :func:`random_flip_batch`. Scripts with
    ``--label_column`` / ``--caption_column`` flags (``train_lmd.py``) also get ``"class_labels"`` / ``"caption"``.
    """
    check_data_args(args)
    conditions = dict(
        label_column=getattr(args, "label_column", None), caption_column=getattr(args, "caption_column", None)
    )
    if uses_demo_data(args):
        if any(conditions.values()):
            raise ValueError(
                "--label_column and --caption_column need a dataset with such columns (--dataset_name or "
                "--train_data_dir); the built-in demo photos have neither."
            )
        return build_demo_datasets(
            resolution=args.resolution,
            crops_per_photo=args.demo_crops_per_photo,
            eval_crops=args.demo_eval_crops,
            min_crop_scale=args.demo_min_crop_scale,
            eval_photo=args.demo_eval_photo,
            seed=args.data_seed,
            max_train_samples=args.max_train_samples,
        )
    train, evaluation = split_train_eval(
        load_dataset_dict(
            args.dataset_name, args.dataset_config_name, args.train_data_dir, getattr(args, "cache_dir", None)
        ),
        args.eval_split_ratio,
        args.max_eval_samples,
        args.data_seed,
    )
    column = find_image_column(train, args.image_column)
    if args.max_train_samples is not None and args.max_train_samples < len(train):
        train = train.shuffle(seed=args.data_seed).select(range(args.max_train_samples))
    num_proc = args.dataloader_num_workers or None
    common = dict(
        image_column=column,
        resolution=args.resolution,
        seed=args.data_seed,
        num_proc=num_proc,
        pad_to_resolution=getattr(args, "pad_to_resolution", False),
        **conditions,
    )
    train_dataset = ImageDataset(train, center_crop=args.center_crop, **common)
    eval_dataset = ImageDataset(evaluation, center_crop=True, **common)
    for name, dataset in (("training", train_dataset), ("evaluation", eval_dataset)):
        if len(dataset) == 0:
            raise ValueError(f"No readable {name} images are left: the warnings above name the files skipped.")
    return train_dataset, eval_dataset
