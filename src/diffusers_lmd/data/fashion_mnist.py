"""Fashion-MNIST (method.md §8) as an ordinary ``datasets.DatasetDict``, offline from its IDX files or from the Hub.

Zalando's Fashion-MNIST (MIT licence): 60,000 training and 10,000 test greyscale images, 28x28, ten classes.
Offline it comes from Debian's ``dataset-fashion-mnist`` package (four gzipped IDX files in
``/usr/share/datasets/fashion-mnist/``); with a network, the same data is the Hub dataset
``zalando-datasets/fashion_mnist``. Either way the result has the splits ``train`` and ``test`` with the columns
``image`` (PIL) and ``label`` (a ``ClassLabel`` with the ten names), cached in the HF datasets cache, so latent
caches, training scripts, conditioning and fine-tuning all take the normal ``datasets`` path.

IDX: a big-endian magic number (2051 for images, 2049 for labels), then each dimension as uint32, then the
uint8 data. A truncated or corrupt file, a wrong magic number or image/label counts that disagree raise a
``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib

import datasets
import numpy as np

from .quiet import quiet_datasets

FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_DEBIAN_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# Names that mean this dataset for --dataset_name.
FASHION_MNIST_NAMES = ("fashion_mnist", "fashion-mnist", FASHION_MNIST_HUB_ID)
# Split -> (images file, labels file), as Zalando and Debian name them.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
_IDX_NDIM = {IDX_IMAGES_MAGIC: 3, IDX_LABELS_MAGIC: 1}
# The environment variable a user can point at a folder holding the four IDX files.
DATA_DIR_ENV = "FASHION_MNIST_DIR"


def missing_data_message(where: str) -> str:
    """How to get the data, for every error that finds it missing."""
    return (
        f"Fashion-MNIST was not found ({where}). Install Debian's package `{FASHION_MNIST_DEBIAN_PACKAGE}` "
        f"(`sudo apt-get install -y {FASHION_MNIST_DEBIAN_PACKAGE}`, or `make data`), which puts the four IDX files "
        f"in {FASHION_MNIST_DEBIAN_DIR}; or pass --train_data_dir (or set ${DATA_DIR_ENV}) to a folder holding "
        f"{', '.join(name for pair in FASHION_MNIST_FILES.values() for name in pair)}; or, with a network, use the "
        f"Hub dataset `{FASHION_MNIST_HUB_ID}`."
    )


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in ``.gz``) into a uint8 array of its dimensions.

    Raises a ``ValueError`` naming the file for an unreadable gzip stream, a wrong magic number or a data
    section shorter or longer than its header says.
    """
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable IDX file ({type(err).__name__}: {err}); the file is corrupt "
                         "or truncated, reinstall or re-download it.") from err  # fmt: skip
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX header; the file is truncated.")
    (magic,) = struct.unpack(">i", raw[:4])
    allowed = (expected_magic,) if expected_magic is not None else tuple(_IDX_NDIM)
    if magic not in allowed:
        names = " or ".join(str(m) for m in allowed)
        raise ValueError(f"{path}: wrong IDX magic number {magic} (expected {names}); this is not the right file.")
    ndim = _IDX_NDIM[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: the IDX header is cut short ({len(raw)} bytes); the file is truncated.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: the header promises {expected} data bytes for shape {dims} but the file holds "
            f"{len(raw) - header}; the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_split(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x 28 x 28, labels N)`` of ``split`` (``train`` or ``test``) from the IDX files in ``data_dir``."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}.")
    image_file, label_file = (os.path.join(os.fspath(data_dir), name) for name in FASHION_MNIST_FILES[split])
    images = read_idx(image_file, IDX_IMAGES_MAGIC)
    labels = read_idx(label_file, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels: the files "
            "do not belong together."
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_LABELS):
        raise ValueError(
            f"{label_file}: label {int(labels.max())} is outside the {len(FASHION_MNIST_LABELS)} Fashion-MNIST classes."
        )
    return images, labels


def has_idx_files(data_dir: str | os.PathLike | None) -> bool:
    """Whether ``data_dir`` holds all four Fashion-MNIST IDX files."""
    if not data_dir or not os.path.isdir(data_dir):
        return False
    return all(os.path.isfile(os.path.join(data_dir, name)) for pair in FASHION_MNIST_FILES.values() for name in pair)


def find_local_data_dir() -> str | None:
    """``$FASHION_MNIST_DIR`` or Debian's folder, whichever holds the four IDX files first."""
    for candidate in (os.environ.get(DATA_DIR_ENV), FASHION_MNIST_DEBIAN_DIR):
        if has_idx_files(candidate):
            return candidate
    return None


def fashion_mnist_features() -> datasets.Features:
    return datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_LABELS))}
    )


def _generate_examples(image_file: str, label_file: str, content_hash: str):
    """``datasets.Dataset.from_generator`` body; ``content_hash`` only makes the cache key follow the files."""
    del content_hash
    images = read_idx(image_file, IDX_IMAGES_MAGIC)
    labels = read_idx(label_file, IDX_LABELS_MAGIC)
    for image, label in zip(images, labels):
        yield {"image": image, "label": int(label)}


def _file_hash(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, cache_dir: str | None = None) -> datasets.DatasetDict:
    """Fashion-MNIST as ``DatasetDict(train=..., test=...)`` with ``image`` (PIL, 28x28 greyscale) and ``label``.

    Args:
        data_dir: a folder holding the four IDX files; default ``$FASHION_MNIST_DIR`` or Debian's folder.
        cache_dir: the ``datasets`` cache to build the Arrow tables in (default: the HF datasets cache). The
            tables are keyed by the files' contents, so a second call reuses them.
    """
    folder = os.fspath(data_dir) if data_dir is not None else find_local_data_dir()
    if folder is None:
        raise ValueError(missing_data_message(f"no IDX files in ${DATA_DIR_ENV} or {FASHION_MNIST_DEBIAN_DIR}"))
    if not has_idx_files(folder):
        raise ValueError(missing_data_message(f"{folder} does not hold the four IDX files"))
    splits = {}
    for split in FASHION_MNIST_FILES:
        read_split(folder, split)  # validates both files and their counts before anything is cached
        files = [os.path.join(folder, name) for name in FASHION_MNIST_FILES[split]]
        with quiet_datasets():
            splits[split] = datasets.Dataset.from_generator(
                _generate_examples,
                features=fashion_mnist_features(),
                gen_kwargs={"image_file": files[0], "label_file": files[1], "content_hash": _file_hash(files)},
                cache_dir=cache_dir,
                split=datasets.NamedSplit(split),
            )
    return datasets.DatasetDict(splits)


def load_fashion_mnist_dataset(name: str | None = None, data_dir: str | None = None) -> datasets.DatasetDict:
    """The loader behind ``--dataset_name fashion_mnist`` (or the Hub id) and ``--train_data_dir <IDX folder>``.

    Local IDX files win (the same data, no network); otherwise the Hub id is tried, and when that fails too the
    error names the Debian package and the Hub id.
    """
    if data_dir is not None or find_local_data_dir() is not None:
        return load_fashion_mnist(data_dir)
    try:
        loaded = datasets.load_dataset(FASHION_MNIST_HUB_ID)
    except Exception as err:  # noqa: BLE001 - offline, no such repo, a proxy error...: all mean "not available"
        raise ValueError(missing_data_message(f"--dataset_name {name or FASHION_MNIST_HUB_ID}: {err}")) from err
    return loaded.cast_column("label", fashion_mnist_features()["label"])


def is_fashion_mnist_name(name: str | None) -> bool:
    return name is not None and name.lower() in FASHION_MNIST_NAMES
