"""Image data for LMD and projector training: the built-in demo photos, user datasets, and preprocessing."""

from .builder import DataConfig, build_datasets, check_data_args, uses_demo_data
from .demo import DEFAULT_EVAL_PHOTO, DEMO_PHOTO_NAMES, DemoCropDataset, build_demo_datasets, demo_photos
from .fashion_mnist import (
    FASHION_MNIST_HUB_ID,
    FASHION_MNIST_LABELS,
    load_fashion_mnist,
    read_idx,
)
from .image_dataset import ImageDataset, UnreadableImageWarning
from .transforms import (
    image_to_tensor,
    open_image,
    random_color_batch,
    random_flip_batch,
    random_flip_mask,
    to_rgb,
)

__all__ = [
    "DataConfig",
    "FASHION_MNIST_HUB_ID",
    "FASHION_MNIST_LABELS",
    "load_fashion_mnist",
    "read_idx",
    "DEFAULT_EVAL_PHOTO",
    "DEMO_PHOTO_NAMES",
    "DemoCropDataset",
    "ImageDataset",
    "UnreadableImageWarning",
    "build_datasets",
    "build_demo_datasets",
    "check_data_args",
    "demo_photos",
    "image_to_tensor",
    "open_image",
    "random_color_batch",
    "random_flip_batch",
    "random_flip_mask",
    "to_rgb",
    "uses_demo_data",
]
