"""Fine-tuning LMD encoders for image classification: cached latents of the labelled splits, the training loop
and its MAT@k report. The labelled images themselves come from :mod:`diffusers_lmd.data`."""

from .finetune import TOP_K, TrainingClock, apply_layer_decay, evaluate_accuracy, finetune
from .latents import cache_labelled_latents
from .loading import load_classifier_for_finetuning
from .report import format_seconds, plot_accuracy_curves, summarize_accuracy, time_to_accuracy

__all__ = [
    "TOP_K",
    "TrainingClock",
    "apply_layer_decay",
    "cache_labelled_latents",
    "evaluate_accuracy",
    "finetune",
    "load_classifier_for_finetuning",
    "format_seconds",
    "plot_accuracy_curves",
    "summarize_accuracy",
    "time_to_accuracy",
]
