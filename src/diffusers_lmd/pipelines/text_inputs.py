"""Prompts to the text embeddings a text-conditional ``LMDModel`` attends to, the same way in training and inference.

A frozen text encoder (a ``transformers`` ``CLIPTextModel``) and its tokenizer turn each prompt into the encoder's
last hidden states, padded to the tokenizer's ``model_max_length`` with an attention mask (1 = real token) so
cross-attention ignores the padding. The empty prompt ``""`` is the null condition: label dropout in training
replaces captions by it, and classifier-free guidance uses it as the default negative prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

NULL_PROMPT = ""


@torch.no_grad()
def encode_text(
    tokenizer,
    text_encoder: torch.nn.Module,
    texts: Sequence[str],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``B`` texts -> (``B x S x hidden`` last hidden states, ``B x S`` attention mask), ``S`` the tokenizer's
    ``model_max_length``; longer texts are truncated."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"texts must be a list of strings, got {texts!r}.")
    tokens = tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    device = device if device is not None else text_encoder.device
    input_ids, attention_mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = text_encoder(input_ids, attention_mask=attention_mask).last_hidden_state
    return hidden.to(dtype or hidden.dtype), attention_mask
