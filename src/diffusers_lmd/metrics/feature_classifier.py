"""A compact Fashion-MNIST CNN whose penultimate features stand in for Inception's in FID (method.md §9).

No Inception or CLIP weights can be downloaded here, so generation quality is measured in the feature space of
a small classifier the project trains itself (``training/train_feature_classifier.py``, committed under
``assets/fashion-mnist-classifier/``). Its inputs are what the generators output: ``B x 3 x 32 x 32`` images in
``[-1, 1]`` (greyscale replicated to RGB, the 28x28 images centred on a black canvas).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class FeatureClassifierOutput(BaseOutput):
    """Output of :class:`FeatureClassifier`.

    Args:
        logits: unnormalised class scores, ``B x num_classes``.
        features: the penultimate features FID is computed on, ``B x feature_dim``.
        loss: mean cross-entropy against ``labels`` (only when labels were given).
    """

    logits: torch.Tensor
    features: torch.Tensor
    loss: torch.Tensor | None = None


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers, then a 2x2 max-pool (halves the side)."""
    layers = []
    for c_in in (in_channels, out_channels):
        layers += [nn.Conv2d(c_in, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class FeatureClassifier(ModelMixin, ConfigMixin):
    """A VGG-style CNN: conv stages, global average pool, a ``feature_dim`` ReLU layer (the FID features), logits.

    Args:
        in_channels: image channels (3: greyscale replicated to RGB, as the generators output).
        sample_size: image side the classifier was trained at; other sizes are refused.
        num_classes: number of classes.
        block_channels: output channels of each conv stage (each halves the side).
        feature_dim: width of the penultimate layer.
        dropout: dropout before the last layer in training.
        label_names: class names, ``label_names[i]`` for class ``i``.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        sample_size: int = 32,
        num_classes: int = 10,
        block_channels: tuple[int, ...] = (32, 64, 128),
        feature_dim: int = 128,
        dropout: float = 0.2,
        label_names: list[str] | None = None,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if not block_channels or sample_size % 2 ** len(block_channels):
            raise ValueError(
                f"sample_size {sample_size} must be divisible by 2 ** len(block_channels) = {2 ** len(block_channels)}."
            )
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"label_names has {len(label_names)} names for {num_classes} classes.")
        channels = (in_channels, *block_channels)
        self.stages = nn.Sequential(*(_stage(a, b) for a, b in zip(channels, channels[1:])))
        self.feature_layer = nn.Sequential(nn.Linear(block_channels[-1], feature_dim), nn.ReLU())
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def _check(self, pixel_values: torch.Tensor) -> None:
        c, s = self.config.in_channels, self.config.sample_size
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (c, s, s):
            raise ValueError(
                f"The feature classifier takes B x {c} x {s} x {s} images in [-1, 1], got shape "
                f"{tuple(pixel_values.shape)}: generate at {s} px (Fashion-MNIST padded to {s}x{s}, RGB)."
            )

    def penultimate_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The ``B x feature_dim`` penultimate features of images in ``[-1, 1]``: the space FID is measured in."""
        self._check(pixel_values)
        pooled = self.stages(pixel_values.to(self.dtype)).mean(dim=(2, 3))
        return self.feature_layer(pooled)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool = True
    ) -> FeatureClassifierOutput | tuple:
        """Class logits (and the features they come from); cross-entropy ``loss`` when ``labels`` are given."""
        features = self.penultimate_features(pixel_values)
        logits = self.head(self.head_dropout(features))
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}.")
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device).long())
        if not return_dict:
            return (logits, features) if loss is None else (logits, features, loss)
        return FeatureClassifierOutput(logits=logits, features=features, loss=loss)
