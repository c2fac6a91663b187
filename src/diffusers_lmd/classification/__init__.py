"""Fine-tuning LMD encoders for image classification: labelled data, the training loop and its MAT@k report."""

from .data import (
    LabelledImageDataset,
    TensorDictDataset,
    add_label_args,
    build_labelled_datasets,
    cache_labelled_latents,
    check_label_column,
    encode_labels,
    export_mnist_imagefolder,
    pad_label_names,
)
from .finetune import TOP_K, TrainingClock, apply_layer_decay, evaluate_accuracy, finetune
from .loading import load_classifier_for_finetuning
from .report import format_seconds, plot_accuracy_curves, summarize_accuracy, time_to_accuracy
from .vit_baseline import vit_classifier_from_mae, vit_layer_id

__all__ = [
    "TOP_K",
    "LabelledImageDataset",
    "TensorDictDataset",
    "TrainingClock",
    "add_label_args",
    "apply_layer_decay",
    "build_labelled_datasets",
    "check_label_column",
    "cache_labelled_latents",
    "encode_labels",
    "evaluate_accuracy",
    "export_mnist_imagefolder",
    "finetune",
    "load_classifier_for_finetuning",
    "format_seconds",
    "pad_label_names",
    "plot_accuracy_curves",
    "summarize_accuracy",
    "time_to_accuracy",
    "vit_classifier_from_mae",
    "vit_layer_id",
]
