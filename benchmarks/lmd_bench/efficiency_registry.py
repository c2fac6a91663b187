"""The benchmark's method keys and how each is built for a preset and a projector."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from diffusers_lmd.evaluation import EVAL_MASK_RATIO
from diffusers_lmd.models import LMDModel
from diffusers_lmd.projector import Projector, downsample_factor, latent_channels
from diffusers_lmd.schedulers import LMDMaskScheduler

from .efficiency_methods import EfficiencyMethod, LMDMethod, ViTMAEMethod
from .efficiency_presets import EfficiencyPreset
from .unet_methods import DDPMMethod, MaskedUNetMethod

LMD_SCHEDULES = {"lmd-cs": "cosine", "lmd-ps": "piecewise", "lmd-uniform": "uniform", "lmd-constant": "constant"}
METHODS = (*LMD_SCHEDULES, "lmd-pixel", "lmd-unet", "mae-pixel", "mae-ours", "ddpm-pixel", "ldm-latent")
# The masked-autoencoder rows, each scored by held-out reconstruction PSNR.
MAE_FAMILY = (*LMD_SCHEDULES, "lmd-pixel", "mae-pixel", "mae-ours")
# The MAE references of the headline: transformers' ViTMAE, and the like-for-like MAE (our LMDModel code on
# pixels at MAE's constant 0.75), so a difference between LMD and MAE cannot come from the implementation.
MAE_REFERENCES = ("mae-pixel", "mae-ours")


def check_methods(names: list[str] | tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming unknown method keys."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; choose from {list(METHODS)}.")


def vitmae_like(model: LMDModel, image_size: int, patch_size: int, num_channels: int = 3):
    """transformers' ``ViTMAEForPreTraining`` with ``model``'s widths, depths, heads and MLP ratio, mask 0.75."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    c = model.config
    config = ViTMAEConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=num_channels,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=int(c.mlp_ratio * c.hidden_size),
        decoder_hidden_size=c.decoder_hidden_size,
        decoder_num_hidden_layers=c.decoder_num_layers,
        decoder_num_attention_heads=c.decoder_num_attention_heads,
        decoder_intermediate_size=int(c.mlp_ratio * c.decoder_hidden_size),
        layer_norm_eps=c.norm_eps,
        mask_ratio=EVAL_MASK_RATIO,
        norm_pix_loss=False,  # predict pixels themselves, so reconstructions can be scored
        attn_implementation="sdpa",
    )
    return restore_mae_initialisation(ViTMAEForPreTraining(config))


def restore_mae_initialisation(model):
    """Give a freshly built ``ViTMAEForPreTraining`` the weights its own initialisation means it to have.

    With transformers 5.x, a model made from a config skips part of MAE's init: the encoder's
    ``initialize_weights`` returns early once the patch projection is marked initialised, and the decoder's
    ``_init_weights`` zeros its table, so both fixed 2-D sin-cos position tables, the CLS and mask tokens are all
    zero and the patch projection is not xavier-initialised. A positionless MAE can only predict each image's
    mean (measured: masked MSE stuck at 0.42 for 4,000 steps on Fashion-MNIST, against 0.107 in 550 with the
    tables restored). This runs the model's own ``initialize_weights`` of both halves; every other weight is left
    as transformers initialises it.
    """
    embeddings = model.vit.embeddings
    projection = embeddings.patch_embeddings.projection
    was_marked = getattr(projection, "_is_hf_initialized", None)
    projection._is_hf_initialized = False
    try:
        with torch.no_grad():
            embeddings.initialize_weights()
            model.decoder.initialize_weights(embeddings.patch_embeddings.num_patches)
    finally:
        if was_marked is None:
            del projection._is_hf_initialized
        else:
            projection._is_hf_initialized = was_marked
    return model


def build_method(name: str, preset: EfficiencyPreset, vae: Projector, seed: int = 0) -> EfficiencyMethod:
    """The method ``name`` at the preset's size, for ``vae``'s latents; weights seeded by ``seed``."""
    check_methods([name])
    torch.manual_seed(seed)
    f, channels, p = downsample_factor(vae), latent_channels(vae), preset.patch_size
    latent_size, image_size = preset.resolution // f, preset.resolution
    cosine = LMDMaskScheduler("cosine", mask_ratio_max=EVAL_MASK_RATIO)

    def vit(sample_size: int, in_channels: int, patch_size: int) -> LMDModel:
        return LMDModel.from_preset(
            preset.lmd_preset,
            sample_size=sample_size,
            in_channels=in_channels,
            patch_size=patch_size,
            **preset.lmd_overrides,
        )

    if name in LMD_SCHEDULES:
        scheduler = LMDMaskScheduler(LMD_SCHEDULES[name], mask_ratio_max=EVAL_MASK_RATIO)
        return LMDMethod(name, vit(latent_size, channels, p), scheduler, vae, downsample=f)
    if name == "lmd-pixel":
        return LMDMethod(name, vit(image_size, 3, f * p), cosine, vae=None)
    if name == "mae-ours":
        constant = LMDMaskScheduler("constant", mask_ratio_max=EVAL_MASK_RATIO)
        return LMDMethod(name, vit(image_size, 3, f * p), constant, vae=None)
    if name == "mae-pixel":
        return ViTMAEMethod(name, vitmae_like(vit(image_size, 3, f * p), image_size, f * p))
    if name == "lmd-unet":
        unet = UNet2DModel(
            sample_size=latent_size, in_channels=channels + 1, out_channels=channels, **preset.unet_latent
        )
        return MaskedUNetMethod(name, unet, cosine, vae, patch_size=p, downsample=f)
    if name == "ldm-latent":
        unet = UNet2DModel(sample_size=latent_size, in_channels=channels, out_channels=channels, **preset.unet_latent)
        return DDPMMethod(name, unet, space="latent")
    unet = UNet2DModel(sample_size=image_size, in_channels=3, out_channels=3, **preset.unet_pixel)
    return DDPMMethod(name, unet, space="pixel")
