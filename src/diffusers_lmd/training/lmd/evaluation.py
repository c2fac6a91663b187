"""How held-out evaluation sees a conditional or diffusion-head LMD model during and after training.

``evaluate_reconstruction`` and ``reconstruction_grid`` call ``model(latents, mask=mask)`` and read its first
output. An unconditional model with an MSE head is passed as it is: its first output is the MSE head's mean,
also when it carries a diffusion or categorical head beside it (``mse_loss_weight > 0``), since a reconstruction
is what PSNR scores. Otherwise :class:`UnconditionalPredictor` stands in for it: the unconditional input (the
null class, or the empty prompt's embeddings), and, for a diffusion head without an MSE head, masked patches
*sampled* with a ``DDIMScheduler`` on the head's noise schedule from a fixed seed, so PSNR measures what the
model's reconstructions look like and stays comparable between validation steps.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from torch import nn

from ...masking import patchify, unpatchify
from ...models import LMDModel
from ...models.diffusion_head import sample_tokens
from ...pipelines.pipeline_lmd import DEFAULT_HEAD_INFERENCE_STEPS

EVAL_SAMPLING_SEED = 0


class UnconditionalPredictor(nn.Module):
    """``model`` with the unconditional input, sampling its masked patches when its only head is a diffusion head.

    Args:
        model: the trained ``LMDModel``.
        null_text: the empty prompt's ``(1 x S x D embeddings, 1 x S mask)`` for a text-conditional model.
        num_head_inference_steps: DDIM steps of the diffusion head.
    """

    def __init__(
        self,
        model: LMDModel,
        null_text: tuple[torch.Tensor, torch.Tensor] | None = None,
        num_head_inference_steps: int = DEFAULT_HEAD_INFERENCE_STEPS,
    ):
        super().__init__()
        self.model = model
        self.null_text = null_text
        self.num_head_inference_steps = num_head_inference_steps
        self.head_scheduler = None
        if model.diffusion_head is not None and model.decoder_pred is None:  # else the MSE head's mean
            self.head_scheduler = DDIMScheduler.from_config(model.diffusion_head.noise_scheduler.config)

    @property
    def config(self):
        return self.model.config

    def num_tokens(self, height: int, width: int) -> int:
        return self.model.num_tokens(height, width)

    def forward(
        self, latents: torch.Tensor, mask: torch.Tensor, return_dict: bool = False, return_loss: bool = False
    ) -> tuple:
        """``(predicted latent, mask, None)``, the prediction taken where ``mask`` is 1 (never a loss)."""
        kwargs = {}
        if self.null_text is not None:
            hidden, attention = self.null_text
            kwargs = dict(
                encoder_hidden_states=hidden.to(latents.device, latents.dtype).expand(latents.shape[0], -1, -1),
                encoder_attention_mask=attention.to(latents.device).expand(latents.shape[0], -1),
            )
        if self.head_scheduler is None:
            return self.model(latents, mask=mask, return_dict=False, return_loss=False, **kwargs)
        features = self.model.forward_features(latents, mask, **kwargs)
        picked = mask.to(latents.device).bool()
        generator = torch.Generator().manual_seed(EVAL_SAMPLING_SEED)
        tokens = sample_tokens(
            self.model.diffusion_head, features, picked, self.head_scheduler, self.num_head_inference_steps, generator
        )
        patches = patchify(latents, self.model.patch_size)
        patches[picked] = tokens.to(patches.dtype)
        return unpatchify(patches, self.model.patch_size, *latents.shape[2:]), mask, None


def evaluation_model(model: LMDModel, null_text: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
    """What evaluation calls: ``model`` itself when it has an MSE head and no text, else the wrapper."""
    if null_text is None and (model.diffusion_head is None or model.decoder_pred is not None):
        return model  # class-conditional MSE models take class_labels=None as the null class themselves
    return UnconditionalPredictor(model, null_text)
