"""FID and KID between two sets of images, each a folder of images or a ``datasets`` dataset (on the Hub or saved
to disk), read through the library's data path and scored on a :class:`~.feature_networks.FeatureNetwork`: what
``training/evaluate_fid.py`` runs (:class:`ImageSetConfig` holds its options, named like its flags).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import datasets
import torch

from ..data import ImageDataset
from ..data.image_dataset import find_image_column, load_dataset_dict
from .feature_networks import FeatureNetwork
from .generation import GaussianStats, frechet_distance, kernel_distance

DEFAULT_KID_SUBSET_SIZE = 1000  # Binkowski et al. 2018's subset size
DEFAULT_KID_SUBSETS = 100
_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "~", os.sep)) or os.path.isabs(source)


def check_image_source(source: str, flag: str) -> None:
    """Raise a ``ValueError`` naming ``flag`` when ``source`` names a path that is not a folder."""
    if not source:
        raise ValueError(f"{flag} is empty: pass a folder of images or a datasets dataset (Hub id or saved folder).")
    if os.path.isfile(source):
        raise ValueError(f"{flag} {source!r} is a file: pass the folder that holds the images.")
    if _looks_like_path(source) and not os.path.isdir(os.path.expanduser(source)):
        raise ValueError(f"{flag} {source!r} does not exist: pass an existing folder of images (or a saved dataset).")


@dataclass
class ImageSetConfig:
    """The options of an FID / KID evaluation, one per flag of ``training/evaluate_fid.py``.

    Args:
        real / generated: each a folder of images (``imagefolder``), a dataset saved with ``save_to_disk``, or a
            ``datasets`` dataset id.
        real_split / generated_split: the split to read (default: ``train``, or the only split).
        image_column: the image column of dataset sources (default: detected).
        resolution: the side images are read at (shorter side resized, centre cropped); default: the network's.
        max_samples: score at most this many images of each source (a seeded random subset).
        batch_size / dataloader_num_workers: feature extraction batches and loader processes.
        kid_subset_size / kid_subsets: KID's subset size (capped by the smaller set) and number of subsets.
        seed: seeds the subsets of ``max_samples`` and of KID.
        cache_dir: where ``datasets`` keeps what it downloads.
    """

    real: str
    generated: str
    real_split: str | None = None
    generated_split: str | None = None
    image_column: str | None = None
    resolution: int | None = None
    max_samples: int | None = None
    batch_size: int = 50
    dataloader_num_workers: int = 0
    kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE
    kid_subsets: int = DEFAULT_KID_SUBSETS
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_image_source(self.real, "--real")
        check_image_source(self.generated, "--generated")
        minimums = dict(resolution=8, max_samples=2, batch_size=1, kid_subset_size=2, kid_subsets=1)
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ValueError(f"--{name} must be at least {minimum}, got {value}.")


def _select_split(loaded, split: str | None, flag: str) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    names = list(loaded.keys())
    if split is None:
        if "train" in loaded or len(names) == 1:
            return loaded["train" if "train" in loaded else names[0]]
        raise ValueError(f"{flag} has splits {names} and none is 'train': pass {flag}_split.")
    if split not in loaded:
        raise ValueError(f"{flag}_split {split!r} is not a split of {flag}; its splits are {names}.")
    return loaded[split]


def load_image_source(
    config: ImageSetConfig, source: str, flag: str, split: str | None, resolution: int, pad_to_resolution: bool = False
) -> ImageDataset:
    """The images of ``source`` (``config.real`` or ``config.generated``: a folder, a saved dataset or a dataset id;
    ``flag`` names it in errors, ``split`` is its split) as centre-cropped ``3 x resolution x resolution`` items in
    ``[-1, 1]``, unreadable files skipped with a warning; ``config`` gives the image column, the ``max_samples``
    seeded subset, the loader processes and the ``datasets`` cache."""
    check_image_source(source, flag)
    folder = os.path.expanduser(source)
    try:
        if os.path.isdir(folder) and not any(os.path.isfile(os.path.join(folder, m)) for m in _SAVED_DATASET_MARKERS):
            loaded = load_dataset_dict(None, None, folder, config.cache_dir)
        else:
            loaded = load_dataset_dict(folder if os.path.isdir(folder) else source, None, None, config.cache_dir)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{flag} {source!r} could not be read as a folder of images or a datasets dataset ({err})."
        ) from err
    dataset = _select_split(loaded, split, flag)
    try:
        column = find_image_column(dataset, config.image_column)
    except ValueError as err:
        raise ValueError(f"{flag} {source!r}: {err}") from err
    if config.max_samples is not None and config.max_samples < len(dataset):
        dataset = dataset.shuffle(seed=config.seed).select(range(config.max_samples))
    num_proc = config.dataloader_num_workers or None
    images = ImageDataset(
        dataset, column, resolution, center_crop=True, num_proc=num_proc, pad_to_resolution=pad_to_resolution
    )
    if len(images) < 2:
        raise ValueError(
            f"{flag} {source!r} holds {len(images)} readable image(s): FID and KID need at least 2 per set (thousands "
            "for a stable estimate; see --max_samples)."
        )
    return images


@torch.no_grad()
def extract_features(
    network: FeatureNetwork, images: torch.utils.data.Dataset, batch_size: int = 50, num_workers: int = 0
) -> torch.Tensor:
    """``N x D`` float32 CPU features of a dataset of ``{"pixel_values": ...}`` items, in dataset order."""
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return torch.cat([network(batch["pixel_values"].to(network.device)).cpu() for batch in loader])


@dataclass
class ImageSetScores:
    """FID, KID and what they were measured on (:meth:`to_dict` for JSON)."""

    fid: float
    kid_mean: float
    kid_std: float
    kid_subset_size: int
    kid_subsets: int
    num_real: int
    num_generated: int
    resolution: int
    feature_network: str
    feature_network_path: str | None
    feature_dim: int
    comparable_with_inception_fid: bool
    description: str

    def to_dict(self) -> dict:
        return asdict(self)

    def report(self) -> str:
        """The lines the command prints."""
        return "\n".join(
            [
                f"FID {self.fid:.4f}",
                f"KID {self.kid_mean:.6f} ± {self.kid_std:.6f} ({self.kid_subsets} subsets of {self.kid_subset_size})",
                f"images: {self.num_real} real, {self.num_generated} generated, read at {self.resolution} px",
                f"feature network: {self.description}",
                "FID is biased upwards at small sample counts: compare values at the same number of images.",
            ]
        )


def score_features(
    real: torch.Tensor,
    generated: torch.Tensor,
    kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE,
    kid_subsets: int = DEFAULT_KID_SUBSETS,
    seed: int = 0,
) -> dict:
    """``fid``, ``kid_mean``, ``kid_std`` and the ``kid_subset_size`` used (capped by the smaller set) of two
    ``N x D`` feature sets."""
    subset_size = min(kid_subset_size, real.shape[0], generated.shape[0])
    kid_mean, kid_std = kernel_distance(real, generated, subset_size, kid_subsets, seed)
    fid = frechet_distance(GaussianStats.from_features(real), GaussianStats.from_features(generated))
    return dict(fid=fid, kid_mean=kid_mean, kid_std=kid_std, kid_subset_size=subset_size)


def evaluate_image_sets(config: ImageSetConfig, network: FeatureNetwork) -> ImageSetScores:
    """Read both sources at ``config.resolution`` (default: the network's input size), extract their features and
    score FID and KID."""
    resolution = config.resolution or network.input_size
    features = {}
    for flag, source, split in (
        ("--real", config.real, config.real_split),
        ("--generated", config.generated, config.generated_split),
    ):
        images = load_image_source(config, source, flag, split, resolution, network.pad_to_resolution)
        features[flag] = extract_features(network, images, config.batch_size, config.dataloader_num_workers)
    real, generated = features["--real"], features["--generated"]
    return ImageSetScores(
        **score_features(real, generated, config.kid_subset_size, config.kid_subsets, config.seed),
        kid_subsets=config.kid_subsets,
        num_real=real.shape[0],
        num_generated=generated.shape[0],
        resolution=resolution,
        feature_network=network.name,
        feature_network_path=network.path,
        feature_dim=real.shape[1],
        comparable_with_inception_fid=network.comparable_with_inception_fid,
        description=network.describe(),
    )
