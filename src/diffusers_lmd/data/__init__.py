"""Image data for LMD and projector training: the built-in demo photos, user datasets, labelled images for
fine-tuning and metrics, and preprocessing."""

from .builder import DataConfig, build_datasets, check_data_args, uses_demo_data
from .demo import DEFAULT_EVAL_PHOTO, DEMO_PHOTO_NAMES, DemoCropDataset, build_demo_datasets, demo_photos
from .fashion_mnist import (
    FASHION_MNIST_HUB_ID,
    FASHION_MNIST_LABELS,
    load_fashion_mnist,
    read_idx,
)
from .image_dataset import ImageDataset, UnreadableImageWarning
from .labelled import (
    DEFAULT_MNIST_CACHE,
    LabelledImageDataset,
    LabelledTensors,
    TensorDictDataset,
    build_labelled_datasets,
    check_label_column,
    encode_labels,
    export_mnist_imagefolder,
    fashion_mnist_data_config,
    load_labelled_tensors,
    pad_label_names,
    stack_images,
)
from .transforms import (
    image_to_tensor,
    open_image,
    random_color_batch,
    random_flip_batch,
    random_flip_mask,
    to_rgb,
)

__all__ = [
    "DEFAULT_MNIST_CACHE",
    "DataConfig",
    "FASHION_MNIST_HUB_ID",
    "FASHION_MNIST_LABELS",
    "load_fashion_mnist",
    "read_idx",
    "DEFAULT_EVAL_PHOTO",
    "DEMO_PHOTO_NAMES",
    "DemoCropDataset",
    "ImageDataset",
    "LabelledImageDataset",
    "LabelledTensors",
    "TensorDictDataset",
    "UnreadableImageWarning",
    "build_datasets",
    "build_demo_datasets",
    "build_labelled_datasets",
    "check_data_args",
    "check_label_column",
    "demo_photos",
    "encode_labels",
    "export_mnist_imagefolder",
    "fashion_mnist_data_config",
    "image_to_tensor",
    "load_labelled_tensors",
    "open_image",
    "pad_label_names",
    "random_color_batch",
    "random_flip_batch",
    "random_flip_mask",
    "stack_images",
    "to_rgb",
    "uses_demo_data",
]
