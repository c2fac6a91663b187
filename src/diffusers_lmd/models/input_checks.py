"""Input validation of :class:`~diffusers_lmd.models.lmd_model.LMDModel`'s forward pass: every bad input becomes a
``ValueError`` that names the problem and the fix, before any computation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..masking import check_mask_ratio, check_patchable

if TYPE_CHECKING:
    from .lmd_model import LMDModel


def check_model_inputs(
    model: LMDModel, latents: torch.Tensor, mask: torch.Tensor | None, mask_ratio: float | None
) -> None:
    """Raise a ``ValueError`` naming what is wrong with the inputs of ``model.forward`` (NaN or infinite latents
    too, in eval mode only: that check costs a host-device sync, which the training step does without)."""
    if latents.ndim != 4:
        raise ValueError(f"latents must be B x C x H x W, got shape {tuple(latents.shape)}.")
    if latents.shape[1] != model.config.in_channels:
        raise ValueError(
            f"latents have {latents.shape[1]} channels but the model expects in_channels="
            f"{model.config.in_channels}: use a projector with matching latent channels."
        )
    check_patchable(latents.shape[2], latents.shape[3], model.patch_size)
    if mask is not None and mask_ratio is not None:
        raise ValueError("Pass either mask or mask_ratio, not both.")
    if mask is not None:
        expected = (latents.shape[0], model.num_tokens(*latents.shape[2:]))
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"mask must have shape {expected} (batch x tokens, row-major patches), got {tuple(mask.shape)}."
            )
    if mask_ratio is not None:
        check_mask_ratio(mask_ratio, allow_one=True)
    # Off the training hot path: the check reads a value back from the device (a sync). In training a NaN latent
    # makes a NaN loss, which the trainer stops on and then traces to the latents (NonFiniteLossError).
    if not model.training and not torch.compiler.is_compiling() and not torch.isfinite(latents).all():
        raise ValueError("latents contain NaN or infinite values: check the projector and its scaling_factor.")
