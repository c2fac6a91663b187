"""The data options of a run (:class:`DataConfig`) and the one function every script builds its data with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .demo import DEFAULT_EVAL_PHOTO, build_demo_datasets
from .image_dataset import ImageDataset, find_image_column, load_dataset_dict, split_train_eval


@dataclass
class DataConfig:
    """Which images a run reads and how it prepares them: one field per data flag, with the flag's default
    (:mod:`diffusers_lmd.training.args.data` defines the flags and converts parsed ones into this).

    Args:
        dataset_name / dataset_config_name: a ``datasets`` dataset on the Hub or on disk, and its config.
        train_data_dir: a folder of images (``imagefolder``) or of Fashion-MNIST's IDX files.
        image_column: the image column (default: detected).
        resolution: the side of the square images; ``center_crop`` crops the centre after resizing (else a seeded
            random crop), ``pad_to_resolution`` centres smaller images on a black square instead of upscaling.
        random_flip: whether training batches are flipped (by the consumer: datasets never flip).
        dataloader_num_workers: data-loading workers (also the processes that prepare a ``datasets`` table).
        max_train_samples / max_eval_samples: caps on the number of training / held-out images.
        eval_split_ratio: the held-out share when the dataset has no validation or test split.
        data_seed: seeds the demo crops, the held-out slice and the random crops.
        demo_*: the built-in demo data (used without ``dataset_name`` and ``train_data_dir``).
        label_column / caption_column: a class-label or caption column that travels with each image.
    """

    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_data_dir: str | None = None
    image_column: str | None = None
    resolution: int = 64
    center_crop: bool = False
    pad_to_resolution: bool = False
    random_flip: bool = False
    dataloader_num_workers: int = 0
    max_train_samples: int | None = None
    eval_split_ratio: float = 0.05
    max_eval_samples: int | None = 256
    data_seed: int = 0
    demo_crops_per_photo: int = 256
    demo_eval_crops: int = 32
    demo_min_crop_scale: float = 0.25
    demo_eval_photo: str = DEFAULT_EVAL_PHOTO
    label_column: str | None = None
    caption_column: str | None = None

    def __post_init__(self) -> None:
        check_data_args(self)


def check_data_args(data: DataConfig) -> None:
    """Raise a ``ValueError``, naming the flags, for data options that cannot work together."""
    if data.dataset_name is not None and data.train_data_dir is not None:
        raise ValueError("Pass either --dataset_name or --train_data_dir, not both.")
    if data.resolution < 8:
        raise ValueError(f"--resolution must be at least 8 pixels, got {data.resolution}.")
    if data.max_train_samples is not None and data.max_train_samples < 1:
        raise ValueError(f"--max_train_samples must be >= 1, got {data.max_train_samples}.")
    if data.max_eval_samples is not None and data.max_eval_samples < 1:
        raise ValueError(f"--max_eval_samples must be >= 1, got {data.max_eval_samples}.")


def uses_demo_data(data: DataConfig) -> bool:
    """True when no dataset flag was given, so the built-in demo data is used."""
    return data.dataset_name is None and data.train_data_dir is None


def build_datasets(
    data: DataConfig, cache_dir: str | None = None
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """``(train_dataset, eval_dataset)`` of ``{"pixel_values": 3 x R x R in [-1, 1]}`` items, never flipped.

    Consumers apply ``random_flip`` to training batches with :func:`random_flip_batch`. With a ``label_column`` /
    ``caption_column`` the items also hold ``"class_labels"`` / ``"caption"``. ``cache_dir`` is where ``datasets``
    keeps what it downloads from the Hub (default: its own cache).
    """
    check_data_args(data)
    conditions = dict(label_column=data.label_column, caption_column=data.caption_column)
    if uses_demo_data(data):
        if any(conditions.values()):
            raise ValueError(
                "--label_column and --caption_column need a dataset with such columns (--dataset_name or "
                "--train_data_dir); the built-in demo photos have neither."
            )
        return build_demo_datasets(
            resolution=data.resolution,
            crops_per_photo=data.demo_crops_per_photo,
            eval_crops=data.demo_eval_crops,
            min_crop_scale=data.demo_min_crop_scale,
            eval_photo=data.demo_eval_photo,
            seed=data.data_seed,
            max_train_samples=data.max_train_samples,
        )
    train, evaluation = split_train_eval(
        load_dataset_dict(data.dataset_name, data.dataset_config_name, data.train_data_dir, cache_dir),
        data.eval_split_ratio,
        data.max_eval_samples,
        data.data_seed,
    )
    column = find_image_column(train, data.image_column)
    if data.max_train_samples is not None and data.max_train_samples < len(train):
        train = train.shuffle(seed=data.data_seed).select(range(data.max_train_samples))
    num_proc = data.dataloader_num_workers or None
    common = dict(
        image_column=column,
        resolution=data.resolution,
        seed=data.data_seed,
        num_proc=num_proc,
        pad_to_resolution=data.pad_to_resolution,
        **conditions,
    )
    train_dataset = ImageDataset(train, center_crop=data.center_crop, **common)
    eval_dataset = ImageDataset(evaluation, center_crop=True, **common)
    for name, dataset in (("training", train_dataset), ("evaluation", eval_dataset)):
        if len(dataset) == 0:
            raise ValueError(f"No readable {name} images are left: the warnings above name the files skipped.")
    return train_dataset, eval_dataset
