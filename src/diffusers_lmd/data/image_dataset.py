"""User image data through ``datasets``: a Hub id or local path (``--dataset_name``) or an image folder.

The image column is read with ``Image(decode=False)`` and decoded here with PIL, so one unreadable or
truncated file is skipped with a warning naming it instead of crashing the run halfway through an epoch.
The readability check runs once per dataset through ``Dataset.map`` (cached by ``datasets`` on disk and
parallel with ``num_proc``); the warnings are always issued from the calling process.
"""

from __future__ import annotations

import os
import warnings

import datasets
import numpy as np
import torch

from .fashion_mnist import has_idx_files, is_fashion_mnist_name, load_fashion_mnist, load_fashion_mnist_dataset
from .transforms import image_name, image_to_tensor, open_image

EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")
_MAX_NAMED_WARNINGS = 20


class UnreadableImageWarning(UserWarning):
    """An image that could not be decoded was left out of the dataset."""


def load_dataset_dict(
    dataset_name: str | None, config_name: str | None, train_data_dir: str | None, cache_dir: str | None = None
):
    """``datasets.load_dataset`` for a Hub id / local path, ``load_from_disk`` for a saved dataset, or imagefolder;
    ``cache_dir`` is ``load_dataset``'s (``--cache_dir``, as in diffusers' example scripts).

    Fashion-MNIST (``fashion_mnist`` or its Hub id, or a folder holding its four IDX files) comes from the local
    IDX files when they exist (:mod:`diffusers_lmd.data.fashion_mnist`).
    """
    if is_fashion_mnist_name(dataset_name):
        return load_fashion_mnist_dataset(dataset_name)
    if dataset_name is None and has_idx_files(train_data_dir):
        return load_fashion_mnist(train_data_dir)
    if dataset_name is not None:
        saved = os.path.isdir(dataset_name) and any(
            os.path.isfile(os.path.join(dataset_name, marker)) for marker in ("dataset_dict.json", "state.json")
        )
        if saved:
            return datasets.load_from_disk(dataset_name)
        return datasets.load_dataset(dataset_name, config_name, cache_dir=cache_dir)
    if not os.path.isdir(train_data_dir):
        raise ValueError(f"--train_data_dir {train_data_dir!r} is not a directory of images.")
    return datasets.load_dataset("imagefolder", data_dir=train_data_dir, cache_dir=cache_dir)


def find_image_column(dataset: datasets.Dataset, image_column: str | None) -> str:
    """The column holding images: the one asked for, else the first ``Image`` feature, else ``image``/``img``."""
    columns = dataset.column_names
    if image_column is not None:
        if image_column not in columns:
            raise ValueError(f"--image_column {image_column!r} is not in the dataset; its columns are {columns}.")
        return image_column
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in ("image", "img"):
        if name in columns:
            return name
    raise ValueError(f"Found no image column among {columns}: pass --image_column.")


def _check_readable(record, index: int) -> dict:
    """``Dataset.map`` function: can this record be decoded? (PIL raises many error types on corrupt data.)"""
    try:
        open_image(record)
    except Exception as err:  # noqa: BLE001 - OSError, SyntaxError, ValueError, struct.error... all mean unreadable
        return {"readable": False, "problem": f"{image_name(record, index)}: {type(err).__name__}: {err}"}
    return {"readable": True, "problem": ""}


def drop_unreadable(dataset: datasets.Dataset, image_column: str, num_proc: int | None = None) -> datasets.Dataset:
    """Decode every image once and remove those that fail, warning with each file's name."""
    if len(dataset) == 0:
        return dataset
    checks = dataset.map(
        _check_readable,
        input_columns=[image_column],
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc if num_proc and num_proc > 1 and len(dataset) >= 4 * num_proc else None,
        desc="Checking images",
    )
    readable = checks["readable"]
    bad = [i for i, ok in enumerate(readable) if not ok]
    if not bad:
        return dataset
    problems = checks.select(bad)["problem"]
    for problem in problems[:_MAX_NAMED_WARNINGS]:
        warnings.warn(f"Skipping unreadable image {problem}", UnreadableImageWarning, stacklevel=2)
    if len(bad) > _MAX_NAMED_WARNINGS:
        warnings.warn(
            f"Skipped {len(bad) - _MAX_NAMED_WARNINGS} more unreadable images.", UnreadableImageWarning, stacklevel=2
        )
    return dataset.select([i for i, ok in enumerate(readable) if ok])


class ImageDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` of images as ``{"pixel_values": 3 x R x R in [-1, 1]}`` items, with the image's
    ``"class_labels"`` (an int) and ``"caption"`` (a string) when ``label_column`` / ``caption_column`` are given.

    Args:
        dataset: a ``datasets.Dataset``; its ``image_column`` is cast to ``Image(decode=False)`` and read with PIL.
        image_column: the column holding images (``Image`` feature, or paths).
        resolution: side of the returned images.
        center_crop: crop the centre; otherwise a random crop drawn from (``seed``, epoch, item): redrawn each epoch
            (:meth:`set_epoch`, which Accelerate's prepared loaders call), the same on a resumed run.
        seed: seeds the random crops.
        check_images: decode every image once now and drop the unreadable ones (with a warning each).
        num_proc: processes for that check.
        pad_to_resolution: centre images no larger than ``resolution`` on a black square instead of upscaling.
        label_column: a ``ClassLabel`` column to return as ``"class_labels"``; its names are ``class_names``.
        caption_column: a string column to return as ``"caption"``.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        image_column: str,
        resolution: int,
        center_crop: bool = True,
        seed: int = 0,
        check_images: bool = True,
        num_proc: int | None = None,
        pad_to_resolution: bool = False,
        label_column: str | None = None,
        caption_column: str | None = None,
    ):
        self.class_names = _check_condition_columns(dataset, label_column, caption_column)
        try:
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"Column {image_column!r} holds {dataset.features[image_column]}, not images or image paths: "
                "pass the right --image_column."
            ) from err
        dataset = dataset.select_columns([image_column] + [c for c in (label_column, caption_column) if c])
        if check_images:
            dataset = drop_unreadable(dataset, image_column, num_proc)
        self.dataset = dataset
        self.image_column = image_column
        self.resolution = resolution
        self.center_crop = center_crop
        self.seed = seed
        self.pad_to_resolution = pad_to_resolution
        self.label_column, self.caption_column = label_column, caption_column
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's random crops (``DataLoader`` workers start from the dataset as it is at each epoch)."""
        self.epoch = int(epoch)

    def crop_generator(self, index: int) -> torch.Generator | None:
        """The generator of item ``index``'s random crop this epoch (``None`` with ``center_crop``). Epoch 0 draws the
        crops this class always drew, so latent caches built before crops were redrawn still match."""
        if self.center_crop:
            return None
        if self.epoch == 0:
            return torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.dataset[index]
        record = row[self.image_column]
        generator = self.crop_generator(index)
        try:
            image = open_image(record)
        except Exception as err:  # noqa: BLE001 - only reached with check_images=False
            raise ValueError(
                f"Could not read image {image_name(record, index)} ({err}); build the dataset with check_images=True "
                "to skip unreadable files."
            ) from err
        item = {
            "pixel_values": image_to_tensor(image, self.resolution, self.center_crop, generator, self.pad_to_resolution)
        }
        if self.label_column:
            item["class_labels"] = int(row[self.label_column])
        if self.caption_column:
            item["caption"] = str(row[self.caption_column])
        return item


def _check_condition_columns(
    dataset: datasets.Dataset, label_column: str | None, caption_column: str | None
) -> list[str] | None:
    """Raise a ``ValueError`` unless the label column is a ``ClassLabel`` and the caption column holds strings;
    return the class names."""
    for flag, column in (("--label_column", label_column), ("--caption_column", caption_column)):
        if column and column not in dataset.column_names:
            raise ValueError(f"{flag} {column!r} is not in the dataset; its columns are {dataset.column_names}.")
    if caption_column and dataset.features[caption_column] != datasets.Value("string"):
        raise ValueError(
            f"--caption_column {caption_column!r} holds {dataset.features[caption_column]}, not strings (captions)."
        )
    if not label_column:
        return None
    feature = dataset.features[label_column]
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(
            f"--label_column {label_column!r} holds {feature}, not a datasets.ClassLabel: cast it first, e.g. "
            f"dataset.cast_column({label_column!r}, datasets.ClassLabel(names=[...])), so the classes have names."
        )
    return list(feature.names)


def split_train_eval(
    dataset_dict, eval_split_ratio: float, max_eval_samples: int | None, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The ``train`` split (or the only one) and an eval split: ``validation``/``test`` if present, else a
    seeded held-out slice of ``eval_split_ratio`` of train (at least one image)."""
    if isinstance(dataset_dict, datasets.Dataset):
        dataset_dict = datasets.DatasetDict(train=dataset_dict)
    splits = list(dataset_dict.keys())
    if "train" in dataset_dict:
        train = dataset_dict["train"]
    elif len(splits) == 1:
        train = dataset_dict[splits[0]]
    else:
        raise ValueError(f"The dataset has splits {splits} but no 'train' split to train on.")
    eval_name = next((name for name in EVAL_SPLIT_NAMES if name in dataset_dict), None)
    if eval_name is not None:
        evaluation = dataset_dict[eval_name]
    else:
        if not 0.0 < eval_split_ratio < 1.0:
            raise ValueError(f"--eval_split_ratio must be in (0, 1), got {eval_split_ratio}.")
        if len(train) < 2:
            raise ValueError(f"The dataset has {len(train)} image(s): at least 2 are needed to hold one out.")
        num_eval = min(len(train) - 1, max(1, round(eval_split_ratio * len(train))))
        parts = train.train_test_split(test_size=num_eval, seed=seed, shuffle=True)
        train, evaluation = parts["train"], parts["test"]
    if max_eval_samples is not None and len(evaluation) > max_eval_samples:
        evaluation = evaluation.shuffle(seed=seed).select(range(max_eval_samples))
    return train, evaluation
