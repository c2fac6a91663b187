"""``LMDForImageClassification``: an LMD-pretrained encoder as an image classification backbone.

As in MAE fine-tuning, the decoder is discarded and the encoder sees every token (no masking); the
token features are mean-pooled (or the CLS token is taken), normalised and fed to a linear head.
The frozen projector can be embedded so the model takes images; without it the model takes latents
(the fast path when latents are cached). An embedded projector is saved *inside* the model: its class
and config in ``projector_class_name`` / ``projector_config`` and its weights under ``projector.`` in
the same safetensors file, so one folder reloads the whole image-to-logits model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, VQModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..projector import check_compatible, encode_images
from .legacy_keys import LegacyAttentionKeysMixin
from .lmd_model import LMDModel

POOLING_MODES = ("mean", "cls")
PROJECTOR_CLASSES = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}
# LMDModel attributes used only by the decoder; the classifier drops them (MAE fine-tuning does the same).
DECODER_ATTRIBUTES = ("decoder_embed", "mask_token", "decoder_blocks", "decoder_norm", "decoder_pred")
ENCODER_CONFIG_KEYS = (
    "sample_size",
    "in_channels",
    "patch_size",
    "hidden_size",
    "num_layers",
    "num_attention_heads",
    "mlp_ratio",
    "norm_eps",
)


@dataclass
class LMDImageClassifierOutput(BaseOutput):
    """Output of :class:`LMDForImageClassification`.

    Args:
        logits: unnormalised class scores, ``B x num_labels``.
        loss: mean cross-entropy against ``labels`` (only when labels were given).
        pooled_output: the pooled encoder features before the head's LayerNorm, ``B x hidden_size``.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None


def _projector_config(vae: VQModel | AutoencoderKL) -> dict:
    """The projector's public config as a JSON-ready dict (private ``_`` keys dropped)."""
    return {k: v for k, v in vae.config.items() if not k.startswith("_")}


class LMDForImageClassification(LegacyAttentionKeysMixin, ModelMixin, ConfigMixin):
    """The LMD encoder on all latent tokens, pooled, then ``LayerNorm`` + ``Linear`` to ``num_labels`` logits.

    Args:
        num_labels: number of classes.
        sample_size / in_channels / patch_size / hidden_size / num_layers / num_attention_heads / mlp_ratio /
            norm_eps: the encoder's architecture, as in :class:`LMDModel` (copied from the pre-trained model by
            :meth:`from_lmd_model` / :meth:`from_lmd_pretrained`).
        pooling: ``"mean"`` (mean of the patch tokens, MAE's fine-tuning default) or ``"cls"`` (the CLS token).
        classifier_dropout: dropout before the linear head.
        label_names: optional class names, ``label_names[i]`` for class ``i``.
        projector_class_name / projector_config: an embedded frozen projector (``VQModel`` or ``AutoencoderKL``)
            so that :meth:`forward` accepts ``pixel_values``; ``None`` for a latents-only model.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        num_labels: int = 2,
        sample_size: int | tuple[int, int] = 28,
        in_channels: int = 4,
        patch_size: int = 2,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_attention_heads: int = 12,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        pooling: str = "mean",
        classifier_dropout: float = 0.0,
        label_names: list[str] | None = None,
        projector_class_name: str | None = None,
        projector_config: dict | None = None,
    ):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2, got {num_labels}.")
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(f"label_names has {len(label_names)} names but num_labels={num_labels}.")
        # The encoder's architecture is the config's ENCODER_CONFIG_KEYS (registered before __init__ runs), the same
        # keys from_lmd_model copies from a pre-trained LMDModel.
        self.encoder = LMDModel(**{key: self.config[key] for key in ENCODER_CONFIG_KEYS}, decoder_num_layers=0)
        for name in DECODER_ATTRIBUTES:  # only forward_decoder reads them: the encoder is complete without
            setattr(self.encoder, name, None)
        self.fc_norm = nn.LayerNorm(hidden_size, eps=norm_eps)
        self.dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=2e-5)  # MAE: start from near-uniform predictions
        nn.init.zeros_(self.classifier.bias)
        self.projector = self._build_projector(projector_class_name, projector_config)

    @staticmethod
    def _build_projector(class_name: str | None, config: dict | None) -> VQModel | AutoencoderKL | None:
        if class_name is None and config is None:
            return None
        if class_name not in PROJECTOR_CLASSES or config is None:
            raise ValueError(
                f"An embedded projector needs projector_class_name in {sorted(PROJECTOR_CLASSES)} and a "
                f"projector_config; got {class_name!r} and {'a config' if config else 'no config'}."
            )
        projector = PROJECTOR_CLASSES[class_name].from_config(config)
        return projector.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> LMDForImageClassification:
        """Switch train/eval mode; the embedded projector stays frozen in eval mode."""
        super().train(mode)
        if self.projector is not None:
            self.projector.eval()
        return self

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @classmethod
    def from_lmd_model(
        cls,
        model: LMDModel,
        num_labels: int,
        projector: VQModel | AutoencoderKL | None = None,
        **kwargs,
    ) -> LMDForImageClassification:
        """Build a classifier around a (pre-trained) ``LMDModel``'s encoder weights, and optionally its projector.

        ``kwargs`` set the head: ``pooling``, ``classifier_dropout``, ``label_names``.
        """
        if not isinstance(model, LMDModel):
            raise TypeError(f"model must be an LMDModel, got {type(model).__name__}.")
        config = {key: model.config[key] for key in ENCODER_CONFIG_KEYS}
        if projector is not None:
            check_compatible(projector, model)
            kwargs.update(projector_class_name=type(projector).__name__, projector_config=_projector_config(projector))
        classifier = cls(num_labels=num_labels, **config, **kwargs)
        encoder_state = classifier.encoder.state_dict()
        classifier.encoder.load_state_dict({k: v for k, v in model.state_dict().items() if k in encoder_state})
        if projector is not None:
            classifier.projector.load_state_dict(projector.state_dict())
        return classifier.to(model.device)  # float32 master weights whatever the pre-trained dtype

    @classmethod
    def from_lmd_pretrained(
        cls,
        pretrained_path: str | os.PathLike,
        num_labels: int,
        projector: VQModel | AutoencoderKL | str | os.PathLike | None = None,
        **kwargs,
    ) -> LMDForImageClassification:
        """Build a classifier from a saved ``LMDPipeline`` folder (``transformer/`` + ``vae/``) or ``LMDModel`` folder.

        The projector to embed is ``projector`` (a model or a saved folder) if given, else the pipeline's ``vae/``;
        an ``LMDModel`` folder without ``projector`` gives a latents-only classifier. ``kwargs`` set the head
        (see :meth:`from_lmd_model`).
        """
        path = os.fspath(pretrained_path)
        if os.path.isfile(os.path.join(path, "transformer", "config.json")):
            model = LMDModel.from_pretrained(path, subfolder="transformer", use_safetensors=True)
            if projector is None and os.path.isfile(os.path.join(path, "vae", "config.json")):
                projector = os.path.join(path, "vae")
        elif os.path.isfile(os.path.join(path, "config.json")):
            model = LMDModel.from_pretrained(path, use_safetensors=True)
        else:
            raise ValueError(
                f"{path!r} is neither an LMDPipeline folder (with transformer/config.json) nor an LMDModel folder "
                "(with config.json): pass the output_dir of an LMD training run or a pipeline's save_pretrained folder."
            )
        if isinstance(projector, (str, os.PathLike)):
            projector = load_projector(projector)
        return cls.from_lmd_model(model, num_labels, projector=projector, **kwargs)

    def forward_features(self, latents: torch.Tensor) -> torch.Tensor:
        """Encode every token (an all-visible mask) and pool to ``B x hidden_size``."""
        self.encoder.check_inputs(latents, None, None)
        b, _, h, w = latents.shape
        num_tokens = self.encoder.num_tokens(h, w)
        all_visible = torch.zeros(b, num_tokens, device=latents.device)
        tokens, _, _ = self.encoder.forward_encoder(latents, all_visible, num_visible=num_tokens)
        return tokens[:, 1:].mean(dim=1) if self.config.pooling == "mean" else tokens[:, 0]

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> LMDImageClassifierOutput | tuple:
        """Classify images (through the embedded projector) or normalised latents.

        Args:
            pixel_values: images in ``[-1, 1]``, ``B x 3 x H x W``; needs an embedded projector.
            latents: normalised projector latents, ``B x C x h x w`` (e.g. from a latent cache).
            labels: class indices ``B``; when given, the mean cross-entropy is returned as ``loss``.
            return_dict: return an :class:`LMDImageClassifierOutput` rather than a tuple.
        """
        if (pixel_values is None) == (latents is None):
            raise ValueError("Pass exactly one of pixel_values or latents.")
        if pixel_values is not None:
            if self.projector is None:
                raise ValueError(
                    "This classifier has no embedded projector, so it takes latents, not pixel_values: encode the "
                    "images with diffusers_lmd.encode_images(vae, images), or build it with from_lmd_pretrained "
                    "from a pipeline folder."
                )
            latents = encode_images(self.projector, pixel_values)
        pooled = self.forward_features(latents.to(self.dtype))
        logits = self.classifier(self.dropout(self.fc_norm(pooled)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device, torch.long))
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return LMDImageClassifierOutput(logits=logits, loss=loss, pooled_output=pooled)

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: 0 embeddings, ``i + 1`` block ``i``, num_layers + 1 head."""
        if name.startswith(("encoder.patch_embed.", "encoder.cls_token")):
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return self.num_layers + 1


def load_projector(folder: str | os.PathLike) -> VQModel | AutoencoderKL:
    """Load a saved ``VQModel`` / ``AutoencoderKL`` folder, choosing the class from its config."""
    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} is not a saved projector folder (no config.json).")
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        class_name = json.load(f).get("_class_name")
    if class_name not in PROJECTOR_CLASSES:
        raise ValueError(f"{folder} holds a {class_name!r}; a projector must be one of {sorted(PROJECTOR_CLASSES)}.")
    return PROJECTOR_CLASSES[class_name].from_pretrained(folder, use_safetensors=True)
