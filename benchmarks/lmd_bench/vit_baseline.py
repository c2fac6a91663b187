"""The MAE baseline of the fine-tuning comparison: transformers' ViT initialised from a ``ViTMAEForPreTraining``.

This is how MAE checkpoints are fine-tuned with transformers: the pre-trained encoder (``mae.vit``) has the same
parameter names as ``ViTModel``, so it loads into ``ViTForImageClassification`` as is; the decoder is dropped and
the CLS token after the final LayerNorm feeds a new linear head.
"""

from __future__ import annotations

import re

from torch import nn


def vit_classifier_from_mae(mae: nn.Module, num_labels: int) -> nn.Module:
    """A ``ViTForImageClassification`` of the same size as ``mae`` (a ``ViTMAEForPreTraining``) with its encoder."""
    from transformers import ViTConfig, ViTForImageClassification

    c = mae.config
    config = ViTConfig(
        image_size=c.image_size,
        patch_size=c.patch_size,
        num_channels=c.num_channels,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        hidden_act=c.hidden_act,
        layer_norm_eps=c.layer_norm_eps,
        qkv_bias=c.qkv_bias,
        num_labels=num_labels,
        attn_implementation="sdpa",
    )
    model = ViTForImageClassification(config)
    model.vit.load_state_dict(mae.vit.state_dict(), strict=True)
    return model.to(next(mae.parameters()).device)


def vit_layer_id(num_layers: int):
    """``layer_id(name)`` of a ``ViTForImageClassification`` for :func:`apply_layer_decay`: 0 for the embeddings,
    ``i + 1`` for ``encoder.layer.i``, ``num_layers + 1`` for the final norm and the head."""
    block = re.compile(r"^vit\.encoder\.layer\.(\d+)\.")

    def layer_id(name: str) -> int:
        if name.startswith("vit.embeddings."):
            return 0
        match = block.match(name)
        return int(match.group(1)) + 1 if match else num_layers + 1

    return layer_id
