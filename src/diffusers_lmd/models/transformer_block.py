"""The pre-norm ViT block used by both the LMD encoder and decoder, with optional cross-attention to text.

Both attentions are :class:`~diffusers_lmd.models.attention_processor.LMDAttention` (diffusers' attention
processors, backends and layer names ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0``)."""

from __future__ import annotations

import torch
from torch import nn

from .attention_processor import LMDAttention


class TransformerBlock(nn.Module):
    """``x + Attn(LN(x))``, then ``x + CrossAttn(LN(x), context)`` when built with ``cross_attention_dim``, then
    ``x + MLP(LN(x))``. ``attn_mask`` (B x 1 x 1 x N, True = attend) pads ragged rows; ``context_mask``
    (B x 1 x 1 x S, True = attend) hides the condition's padding tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        cross_attention_dim: int | None = None,
    ):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = LMDAttention(dim, num_heads)
        self.norm_cross = self.cross_attn = None
        if cross_attention_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=norm_eps)
            self.cross_attn = LMDAttention(dim, num_heads, cross_attention_dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attention_mask=attn_mask)
        if self.cross_attn is not None and context is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
        return x + self.mlp(self.norm2(x))
