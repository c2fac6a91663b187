"""Metrics: the paper's training-efficiency metrics and PSNR (method.md §5), and generation quality on a Fashion-MNIST
classifier's features (method.md §9; :data:`FID_NAME`, not comparable to Inception FID)."""

from .efficiency import (
    DEFAULT_DELTA,
    DEFAULT_EMA_DECAY,
    DEFAULT_WARMUP_STEPS,
    EfficiencyTracker,
    accuracy_increase_events,
    ema_smooth,
    loss_decrease_events,
    mean_accuracy_increase_time,
    mean_iteration_time,
    mean_loss_decrease_iterations,
    mean_loss_decrease_time,
    overall_mean,
    psnr,
)
from .feature_classifier import FeatureClassifier, FeatureClassifierOutput
from .feature_networks import FEATURE_NETWORKS, FeatureNetwork, load_feature_network
from .feature_training import classifier_accuracy, train_feature_classifier, write_model_card
from .generation import (
    FID_NAME,
    GaussianStats,
    GenerationScorer,
    classifier_outputs,
    conditional_accuracy,
    density_coverage,
    frechet_distance,
    kernel_distance,
    precision_recall,
)
from .image_sets import ImageSetConfig, ImageSetScores, evaluate_image_sets, extract_features, score_features
from .validation import add_noise, degradation_fids, gaussian_blur

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_EMA_DECAY",
    "DEFAULT_WARMUP_STEPS",
    "FEATURE_NETWORKS",
    "FID_NAME",
    "EfficiencyTracker",
    "FeatureClassifier",
    "FeatureClassifierOutput",
    "FeatureNetwork",
    "GaussianStats",
    "GenerationScorer",
    "ImageSetConfig",
    "ImageSetScores",
    "accuracy_increase_events",
    "add_noise",
    "classifier_accuracy",
    "classifier_outputs",
    "conditional_accuracy",
    "density_coverage",
    "degradation_fids",
    "ema_smooth",
    "evaluate_image_sets",
    "extract_features",
    "frechet_distance",
    "gaussian_blur",
    "kernel_distance",
    "load_feature_network",
    "loss_decrease_events",
    "mean_accuracy_increase_time",
    "mean_iteration_time",
    "mean_loss_decrease_iterations",
    "mean_loss_decrease_time",
    "overall_mean",
    "precision_recall",
    "psnr",
    "score_features",
    "train_feature_classifier",
    "write_model_card",
]
