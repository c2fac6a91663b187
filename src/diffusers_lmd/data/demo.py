"""The built-in demo data (method.md §7): seeded random crops of scikit-image's colour photos, one photo held out.

scikit-image ships these photos in its wheel, so the demo, tests and benchmarks need no download. Crops have
a random side (a share of the photo's shorter side) and position, and are resized to the resolution. The crop
boxes are drawn once, from a seeded generator, when the dataset is built: the same seed gives the same data.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from .transforms import image_to_tensor, pil_to_tensor

DEMO_PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")
# Held out of training entirely: the cat's fur is texture no training photo contains, an honest test.
DEFAULT_EVAL_PHOTO = "chelsea"


@functools.cache
def _load_photo(name: str) -> np.ndarray:
    try:
        from skimage import data as skimage_data
    except ImportError as err:
        raise ImportError(
            "The built-in demo data needs scikit-image: `pip install scikit-image` (or the `train` extra), "
            "or pass --dataset_name / --train_data_dir."
        ) from err
    photo = getattr(skimage_data, name)()
    if name == "stereo_motorcycle":  # (left, right, disparity): the left view
        photo = photo[0]
    return np.ascontiguousarray(photo, dtype=np.uint8)


def demo_photos() -> dict[str, np.ndarray]:
    """The demo photos by name, each an ``H x W x 3`` uint8 array."""
    return {name: _load_photo(name) for name in DEMO_PHOTO_NAMES}


class DemoCropDataset(torch.utils.data.Dataset):
    """Seeded random square crops of photos, resized to ``resolution``; items are ``{"pixel_values": 3xRxR}``.

    Args:
        photos: names from ``DEMO_PHOTO_NAMES``.
        num_crops_per_photo: random crops drawn from each photo.
        resolution: side of the returned images, in pixels.
        min_crop_scale: smallest crop side as a share of the photo's shorter side (the largest is 1).
        seed: seeds the crop boxes.
        include_full_photo: also yield each photo's largest centred square, resized (used for evaluation).
    """

    def __init__(
        self,
        photos: list[str] | tuple[str, ...],
        num_crops_per_photo: int,
        resolution: int,
        min_crop_scale: float = 0.25,
        seed: int = 0,
        include_full_photo: bool = False,
    ):
        unknown = sorted(set(photos) - set(DEMO_PHOTO_NAMES))
        if unknown:
            raise ValueError(f"Unknown demo photos {unknown}; choose from {list(DEMO_PHOTO_NAMES)}.")
        if not 0.0 < min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must be in (0, 1], got {min_crop_scale}.")
        if num_crops_per_photo < 0:
            raise ValueError(f"num_crops_per_photo must be >= 0, got {num_crops_per_photo}.")
        self.photos = tuple(photos)
        self.resolution = resolution
        self._images = {name: Image.fromarray(_load_photo(name)) for name in self.photos}
        rng = np.random.default_rng(seed)
        self.crops: list[tuple[str, tuple[float, float, float, float] | None]] = []
        for name in self.photos:
            width, height = self._images[name].size
            short = min(width, height)
            sides = rng.uniform(min_crop_scale, 1.0, num_crops_per_photo) * short
            lefts = rng.uniform(0.0, 1.0, num_crops_per_photo) * (width - sides)
            tops = rng.uniform(0.0, 1.0, num_crops_per_photo) * (height - sides)
            self.crops += [(name, (x, y, x + s, y + s)) for x, y, s in zip(lefts, tops, sides)]
            if include_full_photo:
                self.crops.append((name, None))

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        name, box = self.crops[index]
        image = self._images[name]
        if box is None:
            return {"pixel_values": image_to_tensor(image, self.resolution, center_crop=True)}
        size = (self.resolution, self.resolution)
        crop = image.resize(size, Image.Resampling.BICUBIC, box=box)
        return {"pixel_values": pil_to_tensor(crop).clamp_(-1.0, 1.0)}


def build_demo_datasets(
    resolution: int,
    crops_per_photo: int = 256,
    eval_crops: int = 32,
    min_crop_scale: float = 0.25,
    eval_photo: str = DEFAULT_EVAL_PHOTO,
    seed: int = 0,
    max_train_samples: int | None = None,
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """Train on crops of every demo photo but ``eval_photo``; evaluate on crops of it plus the whole photo."""
    if eval_photo not in DEMO_PHOTO_NAMES:
        raise ValueError(f"eval_photo must be one of {list(DEMO_PHOTO_NAMES)}, got {eval_photo!r}.")
    train_photos = [name for name in DEMO_PHOTO_NAMES if name != eval_photo]
    train = DemoCropDataset(train_photos, crops_per_photo, resolution, min_crop_scale, seed=seed)
    # A different stream for the eval crops, so changing the train crop count never moves the eval set.
    evaluation = DemoCropDataset(
        [eval_photo], eval_crops, resolution, min_crop_scale, seed=seed + 1, include_full_photo=True
    )
    if max_train_samples is not None and max_train_samples < len(train):
        order = np.random.default_rng(seed).permutation(len(train))[:max_train_samples]
        train = torch.utils.data.Subset(train, sorted(order.tolist()))
    return train, evaluation
