"""Loading checkpoints saved before the LMD blocks ran on diffusers' attention machinery.

Those checkpoints hold a fused ``qkv`` projection in self-attention, ``q`` and a fused ``kv`` in
cross-attention, and ``proj`` for the output; the attention modules now name them ``to_q`` / ``to_k`` /
``to_v`` / ``to_out.0``, as diffusers' ``Attention`` does. The fused rows are ``[q | k | v]`` (and ``[k | v]``),
so splitting them in equal thirds (halves) gives the same projections and the same outputs.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import torch
from diffusers.models.attention import AttentionModuleMixin

# An old projection's name -> the new projections its rows split into, in order.
LEGACY_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "qkv": ("to_q", "to_k", "to_v"),
    "q": ("to_q",),
    "kv": ("to_k", "to_v"),
    "proj": ("to_out.0",),
}


def convert_legacy_attention_keys(state_dict: MutableMapping[str, torch.Tensor], prefix: str) -> None:
    """Rename (and split) in place the old keys of the attention module whose keys start with ``prefix``.

    Keys already in the new layout are left alone, so converting twice is harmless. The split parts are copies,
    not views of the fused tensor, so the loaded model saves to safetensors (which refuses shared storage).
    """
    for old, new_names in LEGACY_PROJECTIONS.items():
        for kind in ("weight", "bias"):
            key = f"{prefix}{old}.{kind}"
            if key not in state_dict:
                continue
            parts = state_dict.pop(key).chunk(len(new_names), dim=0)
            for name, part in zip(new_names, parts):
                state_dict[f"{prefix}{name}.{kind}"] = part.clone()


def legacy_attention_keys_hook(module: torch.nn.Module, state_dict: MutableMapping, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook of an attention module: ``nn.Module.load_state_dict`` (a training checkpoint's
    resume, an EMA copy) accepts the old keys too."""
    convert_legacy_attention_keys(state_dict, prefix)


class LegacyAttentionKeysMixin:
    """For a ``ModelMixin`` holding LMD attention modules: ``from_pretrained`` converts an old checkpoint's keys.

    diffusers calls ``_fix_state_dict_keys_on_load`` on the loaded state dict before matching its keys (for
    unsharded checkpoints, which every LMD checkpoint so far is); list this mixin before ``ModelMixin``.
    """

    def _fix_state_dict_keys_on_load(self, state_dict: MutableMapping[str, torch.Tensor]) -> MutableMapping:
        state_dict = super()._fix_state_dict_keys_on_load(state_dict)
        for name, module in self.named_modules():
            if isinstance(module, AttentionModuleMixin):
                convert_legacy_attention_keys(state_dict, f"{name}.")
        return state_dict
