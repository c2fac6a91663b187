"""Conditioning inputs of ``LMDModel``: class labels as condition tokens, and checks of text embeddings.

As in MAR's buffer tokens, the class enters as ``num_condition_tokens`` tokens that are never masked, so the
encoder has input even when every image token is masked (the first step of generation). Row
``num_class_embeds`` of the table is the null class (DiT's convention): the unconditional branch of
classifier-free guidance, and what label dropout trains. Text embeddings (``encoder_hidden_states``) enter
through cross-attention; :func:`text_context_mask` checks them and turns their padding mask into an attention mask.
"""

from __future__ import annotations

import torch
from torch import nn


class ClassConditionTokens(nn.Module):
    """``B`` class labels -> ``B x num_tokens x dim`` condition tokens: the label's embedding + a learned slot one.

    Args:
        num_class_embeds: number of classes; label ``num_class_embeds`` is the null class.
        num_tokens: condition tokens per image.
        dim: token width.
        dropout_prob: in training, the share of labels replaced by the null class (classifier-free guidance).
    """

    def __init__(self, num_class_embeds: int, num_tokens: int, dim: int, dropout_prob: float = 0.0):
        super().__init__()
        if num_class_embeds < 1:
            raise ValueError(f"num_class_embeds must be at least 1 (or None for no classes), got {num_class_embeds}.")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"class_dropout_prob must lie in [0, 1), got {dropout_prob}.")
        if num_tokens < 1:
            raise ValueError(f"num_condition_tokens must be at least 1, got {num_tokens}.")
        self.num_class_embeds = num_class_embeds
        self.dropout_prob = dropout_prob
        self.embedding = nn.Embedding(num_class_embeds + 1, dim)
        self.slot_embedding = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.slot_embedding, std=0.02)

    @property
    def null_label(self) -> int:
        """The label of the unconditional branch."""
        return self.num_class_embeds

    def check_labels(self, class_labels: torch.Tensor, batch_size: int) -> None:
        """Raise a ``ValueError`` unless ``class_labels`` is ``B`` integers in ``[0, num_class_embeds]``."""
        if class_labels.dtype.is_floating_point or class_labels.dtype == torch.bool or class_labels.ndim != 1:
            raise ValueError(
                f"class_labels must be a 1-D integer tensor (one label per image), got {class_labels.dtype} "
                f"of shape {tuple(class_labels.shape)}."
            )
        if class_labels.shape[0] != batch_size:
            raise ValueError(f"Got {class_labels.shape[0]} class_labels for a batch of {batch_size} latents.")
        if not torch.compiler.is_compiling() and ((class_labels < 0) | (class_labels > self.null_label)).any():
            raise ValueError(
                f"class_labels must lie in [0, {self.num_class_embeds}) ({self.null_label} is the null class), "
                f"got {class_labels.tolist()}."
            )

    def drop_labels(self, class_labels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Replace each label by the null class with probability ``dropout_prob``, drawn from ``generator``."""
        noise_device = generator.device if generator is not None else class_labels.device
        drop = torch.rand(class_labels.shape[0], generator=generator, device=noise_device) < self.dropout_prob
        return torch.where(drop.to(class_labels.device), self.null_label, class_labels)

    def forward(self, class_labels: torch.Tensor | None, batch_size: int, generator: torch.Generator | None = None):
        """Condition tokens for ``class_labels`` (``None``: the null class for every image), after label dropout."""
        device = self.embedding.weight.device
        if class_labels is None:
            class_labels = torch.full((batch_size,), self.null_label, device=device, dtype=torch.long)
        else:
            class_labels = class_labels.to(device=device, dtype=torch.long)
            if self.training and self.dropout_prob > 0:
                class_labels = self.drop_labels(class_labels, generator)
        return self.embedding(class_labels)[:, None, :] + self.slot_embedding


def text_context_mask(
    encoder_hidden_states: torch.Tensor | None,
    encoder_attention_mask: torch.Tensor | None,
    cross_attention_dim: int | None,
    batch_size: int,
) -> torch.Tensor | None:
    """Check text embeddings against the model's ``cross_attention_dim``; return the ``B x 1 x 1 x S`` attention
    mask (True = attend) of ``encoder_attention_mask``, or ``None`` when every text token is attended."""
    dim = cross_attention_dim
    if encoder_hidden_states is None:
        if dim is not None:
            raise ValueError(
                f"This model is text-conditional (cross_attention_dim={dim}): pass encoder_hidden_states; "
                "the empty prompt's embeddings give the unconditional branch."
            )
        if encoder_attention_mask is not None:
            raise ValueError("encoder_attention_mask was given without encoder_hidden_states.")
        return None
    if dim is None:
        raise ValueError(
            "encoder_hidden_states were given, but this model has no text conditioning (cross_attention_dim=None)."
        )
    if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[::2] != (batch_size, dim):
        raise ValueError(
            f"encoder_hidden_states must be {batch_size} x sequence x {dim} (batch x text tokens x "
            f"cross_attention_dim), got shape {tuple(encoder_hidden_states.shape)}."
        )
    if encoder_attention_mask is None:
        return None
    if tuple(encoder_attention_mask.shape) != tuple(encoder_hidden_states.shape[:2]):
        raise ValueError(
            f"encoder_attention_mask must be {tuple(encoder_hidden_states.shape[:2])} (batch x text tokens, "
            f"1 = attend), got {tuple(encoder_attention_mask.shape)}."
        )
    keep = encoder_attention_mask.to(encoder_hidden_states.device).bool()
    if not torch.compiler.is_compiling() and not keep.any(dim=1).all():
        raise ValueError("Every row of encoder_attention_mask must keep at least one text token.")
    return keep[:, None, None, :]
