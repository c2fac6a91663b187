"""The LMD blocks' attention on diffusers' attention machinery.

``LMDAttention`` is an ``AttentionModuleMixin`` module with diffusers' layer names (``to_q``, ``to_k``, ``to_v``,
``to_out.0``), so a model built from it has ``attn_processors`` / ``set_attn_processor``,
``fuse_qkv_projections``, attention backends (``set_attention_backend``) and PEFT/LoRA targets. The processors
call ``dispatch_attention_fn``: torch's ``scaled_dot_product_attention`` by default, or the backend chosen.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_dispatch import dispatch_attention_fn
from torch import nn

from .legacy_keys import legacy_attention_keys_hook

SLICE_SIZE_NAMES = ("auto", "max")


def _projections(attn: LMDAttention, hidden_states: torch.Tensor, context: torch.Tensor | None) -> tuple:
    """Query, key and value, ``B x N x heads x head_dim`` each, through the fused layers when fused."""
    if attn.fused_projections and not attn.is_cross_attention:
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        context = hidden_states if context is None else context
        query = attn.to_q(hidden_states)
        if attn.fused_projections:  # cross-attention fuses key and value only
            key, value = attn.to_kv(context).chunk(2, dim=-1)
        else:
            key, value = attn.to_k(context), attn.to_v(context)
    return tuple(x.unflatten(-1, (attn.heads, -1)) for x in (query, key, value))


class LMDAttnProcessor:
    """Multi-head attention over all heads at once, through ``dispatch_attention_fn``.

    ``attention_mask`` is boolean, True = attend, broadcastable to ``B x heads x N x S`` (the blocks pass
    ``B x 1 x 1 x S``).
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: LMDAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        query, key, value = _projections(attn, hidden_states, encoder_hidden_states)
        out = self.attend(query, key, value, attention_mask)
        return attn.to_out[0](out.flatten(2, 3))  # merge the heads, project back

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None):
        """Attention of ``B x N x heads x head_dim`` inputs, the output in the same layout."""
        return dispatch_attention_fn(query, key, value, attn_mask=mask, backend=self._attention_backend)


class LMDSlicedAttnProcessor(LMDAttnProcessor):
    """Attention ``slice_size`` heads at a time: the attention maps of only those heads are held at once (less
    peak memory where the backend materialises them, e.g. torch's math kernel), at some speed cost."""

    def __init__(self, slice_size: int):
        self.slice_size = slice_size

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None):
        attend = super().attend
        parts = [slice(i, i + self.slice_size) for i in range(0, query.shape[2], self.slice_size)]
        return torch.cat([attend(query[:, :, h], key[:, :, h], value[:, :, h], mask) for h in parts], dim=2)


class LMDAttention(nn.Module, AttentionModuleMixin):
    """Multi-head self-attention (``context_dim=None``) or cross-attention to a ``context_dim``-wide sequence.

    Checkpoints saved with the former fused layers (``qkv``, ``q`` + ``kv``, ``proj``) load through
    ``load_state_dict`` as well (see :mod:`~diffusers_lmd.models.legacy_keys`).
    """

    _default_processor_cls = LMDAttnProcessor
    _available_processors = [LMDAttnProcessor, LMDSlicedAttnProcessor]

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, processor: LMDAttnProcessor | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_attention_heads={heads}.")
        self.heads = heads
        self.inner_dim = dim
        self.use_bias = True  # read by AttentionModuleMixin.fuse_projections
        self.is_cross_attention = context_dim is not None
        kv_dim = dim if context_dim is None else context_dim
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(kv_dim, dim)
        self.to_v = nn.Linear(kv_dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # diffusers' name, to_out.0 (no dropout)
        self.set_processor(processor or self._default_processor_cls())
        self.register_load_state_dict_pre_hook(legacy_attention_keys_hook)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.processor(self, hidden_states, encoder_hidden_states, attention_mask)

    @torch.no_grad()
    def init_weights(self) -> None:
        """MAE's xavier-uniform init with the fans of the fused layers MAE uses (``qkv``; ``q`` and ``kv`` in
        cross-attention), drawn in the same order, so the weights' distribution (and a seeded model) is unchanged."""
        if self.is_cross_attention:
            groups = [(self.to_q,), (self.to_k, self.to_v), (self.to_out[0],)]
        else:
            groups = [(self.to_q, self.to_k, self.to_v), (self.to_out[0],)]
        for group in groups:
            weight = group[0].weight
            fused = torch.empty(len(group) * weight.shape[0], weight.shape[1], device=weight.device, dtype=weight.dtype)
            nn.init.xavier_uniform_(fused)
            for linear, part in zip(group, fused.chunk(len(group))):
                linear.weight.copy_(part)
                nn.init.zeros_(linear.bias)

    def set_attention_slice(self, slice_size: str | int | None) -> None:
        """Compute attention ``slice_size`` heads at a time (``"auto"``: half the heads, ``"max"``: one head);
        ``None`` computes all heads at once (the default processor). The attention backend is kept."""
        if slice_size is None:
            processor = self._default_processor_cls()
        else:
            processor = LMDSlicedAttnProcessor(resolve_slice_size(slice_size, self.heads))
        processor._attention_backend = getattr(self.processor, "_attention_backend", None)
        self.set_processor(processor)


def resolve_slice_size(slice_size: str | int, heads: int) -> int:
    """Heads per slice for ``slice_size`` (``"auto"``, ``"max"`` or an int in ``[1, heads]``); ``ValueError``
    otherwise."""
    if slice_size == "auto":
        return max(heads // 2, 1)
    if slice_size == "max":
        return 1
    if isinstance(slice_size, bool) or not isinstance(slice_size, int) or not 1 <= slice_size <= heads:
        raise ValueError(
            f"slice_size must be {' or '.join(map(repr, SLICE_SIZE_NAMES))}, None, or a number of heads in "
            f"[1, {heads}] (this attention layer has {heads} heads); got {slice_size!r}."
        )
    return slice_size


def set_attention_slice(model: nn.Module, slice_size: str | int | None) -> None:
    """``set_attention_slice`` on every ``LMDAttention`` of ``model``; a size no layer can take raises before any
    layer changes."""
    layers = [module for module in model.modules() if isinstance(module, LMDAttention)]
    if slice_size is not None:
        for layer in layers:
            resolve_slice_size(slice_size, layer.heads)
    for layer in layers:
        layer.set_attention_slice(slice_size)
