"""The pre-norm ViT block used by both the LMD encoder and decoder, with optional cross-attention to text."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_attention_heads={num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Multi-head attention from the tokens (queries) to a condition sequence (keys and values) of another width."""

    def __init__(self, dim: int, num_heads: int, context_dim: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_attention_heads={num_heads}.")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        heads, head_dim = self.num_heads, d // self.num_heads
        q = self.q(x).reshape(b, n, heads, head_dim).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=context_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


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
        self.attn = SelfAttention(dim, num_heads)
        self.norm_cross = self.cross_attn = None
        if cross_attention_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=norm_eps)
            self.cross_attn = CrossAttention(dim, num_heads, cross_attention_dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        if self.cross_attn is not None and context is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
        return x + self.mlp(self.norm2(x))
