"""Feature networks for FID and KID on any images: Inception, DINOv2, CLIP, the project's Fashion-MNIST classifier,
or any ``transformers`` vision model folder the user names.

Each takes square ``B x 3 x R x R`` images in ``[-1, 1]`` (what the data loaders and the pipelines give), brings
them to the size and normalisation its network was trained with (read from the model's
``preprocessor_config.json`` where ``transformers`` has one) and returns ``B x D`` features. Weights load with
``from_pretrained`` from a local folder or a Hub id; nothing is downloaded when a local folder is given.

A Fréchet distance is only comparable with another computed on the **same network**: only ``inception`` (the
TensorFlow FID weights ported by torch-fidelity) gives the FID of the literature. DINOv2 (FD_DINOv2, Stein et al.
2023) and CLIP (FID_CLIP, Kynkäänniemi et al. 2023) features rank generators closer to human judgement; the
Fashion-MNIST classifier is the project's offline stand-in (docs/method.md §9).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPVisionModelWithProjection, Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.utils import cached_file

from .feature_classifier import FeatureClassifier

INCEPTION = "inception"
CUSTOM = "custom"
INCEPTION_INSTALL = (
    "pip install 'torchmetrics[image]' (torchmetrics with torch-fidelity, which needs a torchvision built for your "
    "torch)"
)


@dataclass(frozen=True)
class FeatureNetworkInfo:
    """A registered feature network: where its weights come from by default and what its distance is called."""

    default_path: str | None
    description: str


FEATURE_NETWORKS: dict[str, FeatureNetworkInfo] = {
    INCEPTION: FeatureNetworkInfo(
        None,
        "Inception-v3 pool features (2048-D) with the TensorFlow FID weights as torch-fidelity ports them: the FID "
        "of the literature (Heusel et al. 2017) and KID (Binkowski et al. 2018)",
    ),
    "dinov2": FeatureNetworkInfo(
        "facebook/dinov2-large",
        "DINOv2 CLS features (FD_DINOv2, Stein et al. 2023): a Fréchet distance in DINOv2's feature space",
    ),
    "clip": FeatureNetworkInfo(
        "openai/clip-vit-large-patch14",
        "CLIP image embeddings (FID_CLIP, Kynkäänniemi et al. 2023): a Fréchet distance in CLIP's embedding space",
    ),
    "fashion-mnist-classifier": FeatureNetworkInfo(
        "assets/fashion-mnist-classifier",
        "the penultimate features of the project's Fashion-MNIST classifier (docs/method.md §9): meaningful for "
        "Fashion-MNIST-like 32 px images only",
    ),
}


class FeatureNetwork(nn.Module, ABC):
    """Images in ``[-1, 1]`` (``B x 3 x H x W``) -> ``B x D`` float features, with what a report needs to name it.

    Subclasses implement :meth:`prepare` (resize and normalise as the network expects) and :meth:`features`.

    Args:
        name: the registry name, or ``"custom"`` for a user's folder.
        path: where the weights came from (folder, Hub id or weights file; ``None``: the package's default).
        input_size: the side the network sees; the evaluation command reads images at this size by default.
        pad_to_resolution: centre smaller images on a black square instead of upscaling them (Fashion-MNIST).
    """

    def __init__(self, name: str, path: str | None, input_size: int, pad_to_resolution: bool = False):
        super().__init__()
        self.name, self.path, self.input_size, self.pad_to_resolution = name, path, input_size, pad_to_resolution

    @property
    def comparable_with_inception_fid(self) -> bool:
        return self.name == INCEPTION

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def describe(self) -> str:
        """One line naming the network, its weights and whether its numbers compare with Inception FID."""
        info = FEATURE_NETWORKS.get(self.name)
        what = info.description if info else "the pooled features of a transformers vision model named by the user"
        where = self.path or "torch-fidelity's default weights"
        comparable = (
            "comparable with published Inception FID / KID"
            if self.comparable_with_inception_fid
            else "NOT comparable with Inception FID: compare only with numbers on the same network and weights"
        )
        return f"{self.name} ({where}): {what}; {comparable}."

    @abstractmethod
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Clamped images in ``[-1, 1]`` -> the network's input (size, range, normalisation, dtype)."""

    @abstractmethod
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The network's input -> ``B x D`` features."""

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be B x 3 x H x W in [-1, 1], got {getattr(images, 'shape', images)}.")
        return self.features(self.prepare(images.float().clamp(-1.0, 1.0))).float().flatten(1)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic, antialiased resize of square images to ``size`` (a no-op at that size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


class TransformersFeatureNetwork(FeatureNetwork):
    """A ``transformers`` vision model: ``image_embeds`` if it has them (CLIP), else ``pooler_output`` (DINOv2's
    normalised CLS token), else the mean of its last hidden states over tokens or pixels."""

    def __init__(self, model, name: str, path: str, input_size: int, mean, std):
        super().__init__(name, path, input_size)
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        pixels = _resize((images + 1.0) / 2.0, self.input_size).clamp(0.0, 1.0)
        return ((pixels - self.mean) / self.std).to(self.model.dtype)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        try:
            output = self.model(pixel_values=pixel_values)
        except TypeError as err:
            raise ValueError(
                f"{self.path!r} holds a {type(self.model).__name__}, which does not take images alone: name a vision "
                "model folder (a ViT, DINOv2, ConvNeXt or CLIP vision encoder)."
            ) from err
        for field in ("image_embeds", "pooler_output"):
            value = getattr(output, field, None)
            if value is not None:
                return value
        hidden = output.last_hidden_state
        return hidden.mean(dim=1) if hidden.ndim == 3 else hidden.flatten(2).mean(dim=2)


class ClassifierFeatureNetwork(FeatureNetwork):
    """The project's :class:`FeatureClassifier`: its penultimate features of 32 px images in ``[-1, 1]``."""

    def __init__(self, classifier: FeatureClassifier, path: str):
        super().__init__("fashion-mnist-classifier", path, classifier.config.sample_size, pad_to_resolution=True)
        self.classifier = classifier.eval()

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return _resize(images, self.input_size).clamp(-1.0, 1.0)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier.penultimate_features(pixel_values)


class InceptionFeatureNetwork(FeatureNetwork):
    """torchmetrics' Inception-v3 (torch-fidelity's FID port): 2048-D pool features of uint8 images, which it
    resizes to 299 px itself."""

    def __init__(self, inception: nn.Module, path: str | None):
        super().__init__(INCEPTION, path, 299)
        self.inception = inception

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.inception(pixel_values)


def _processor_settings(path: str, default_mean, default_std, default_size: int) -> tuple[int, list, list]:
    """``(input_size, mean, std)`` from the model's ``preprocessor_config.json`` (its crop, else its resize), or
    the defaults when it has none."""
    config_file = cached_file(path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    if config_file is None:
        return default_size, list(default_mean), list(default_std)
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    size = config.get("crop_size") if config.get("do_center_crop", True) and config.get("crop_size") else None
    size = size or config.get("size") or {}
    if isinstance(size, int):
        side = size
    else:
        side = size.get("height") or size.get("shortest_edge") or default_size
    mean = config.get("image_mean", default_mean) if config.get("do_normalize", True) else [0.0, 0.0, 0.0]
    std = config.get("image_std", default_std) if config.get("do_normalize", True) else [1.0, 1.0, 1.0]
    return int(side), list(mean), list(std)


def _from_pretrained(loader, path: str, name: str):
    try:
        return loader.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Could not load the {name} feature network from {path!r} ({err}). Pass --feature_network_path with a "
            "local folder that holds its weights (save_pretrained), or a Hub id that is cached or reachable."
        ) from err


def _load_transformers(name: str, path: str) -> TransformersFeatureNetwork:
    loader, default_mean, default_std = {
        "dinov2": (Dinov2Model, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        "clip": (CLIPVisionModelWithProjection, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    }.get(name, (AutoModel, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    model = _from_pretrained(loader, path, name)
    default_size = getattr(model.config, "image_size", 224)
    size, mean, std = _processor_settings(path, default_mean, default_std, default_size)
    return TransformersFeatureNetwork(model, name, path, size, mean, std)


def _load_inception(weights_path: str | None) -> InceptionFeatureNetwork:
    if weights_path is not None and not os.path.isfile(weights_path):
        raise ValueError(
            f"--feature_network_path {weights_path!r} is not a file: for inception pass torch-fidelity's weights file "
            "(weights-inception-2015-12-05-6726825d.pth)."
        )
    # torchmetrics and torch-fidelity are optional (the FID extra) and need torchvision: imported only when asked for.
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except (ImportError, RuntimeError, OSError) as err:
        raise ImportError(
            f"--feature_network inception needs torchmetrics and torch-fidelity ({err}): {INCEPTION_INSTALL}. "
            "Without them use --feature_network dinov2, clip or a local transformers vision model folder."
        ) from err
    inception = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights_path
    )
    return InceptionFeatureNetwork(inception, weights_path)


def load_feature_network(network: str, path: str | None = None, device: str | torch.device = "cpu") -> FeatureNetwork:
    """The feature network ``network`` (a name of :data:`FEATURE_NETWORKS`, or a folder of a ``transformers`` vision
    model) on ``device``, its weights from ``path`` (default: the registry's), in eval mode."""
    if network in FEATURE_NETWORKS:
        name, path = network, path or FEATURE_NETWORKS[network].default_path
    elif os.path.isdir(network):
        if path is not None:
            raise ValueError(
                f"--feature_network is already the folder {network!r}: drop --feature_network_path ({path!r})."
            )
        name, path = CUSTOM, network
    else:
        raise ValueError(
            f"--feature_network {network!r} is neither one of {sorted(FEATURE_NETWORKS)} nor a folder holding a "
            "transformers vision model (config.json and weights)."
        )
    if name == INCEPTION:
        result = _load_inception(path)
    elif name == "fashion-mnist-classifier":
        result = ClassifierFeatureNetwork(_from_pretrained(FeatureClassifier, path, name), path)
    else:
        result = _load_transformers(name, path)
    return result.to(device).eval()
