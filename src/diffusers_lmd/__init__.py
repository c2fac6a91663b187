"""diffusers-lmd: Latent Masking Diffusion (arXiv 2312.07971) as a HuggingFace diffusers plug-in."""

from .evaluation import ReconstructionMetrics, evaluate_reconstruction
from .masking import keep_visible, patchify, pixel_mask_to_token_mask, random_mask, unpatchify
from .metrics import EfficiencyTracker, psnr
from .models import LMD_PRESETS, LMDModel, LMDModelOutput
from .models.lmd_classifier import LMDForImageClassification, LMDImageClassifierOutput
from .pipelines import LMDInpaintPipeline, LMDPipeline, LMDPipelineOutput
from .projector import (
    check_compatible,
    decode_latents,
    downsample_factor,
    encode_images,
    estimate_latent_stats,
    latent_channels,
    set_latent_stats,
)
from .schedulers import MASK_SCHEDULES, LMDMaskScheduler, LMDMaskSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "LMD_PRESETS",
    "MASK_SCHEDULES",
    "LMDMaskScheduler",
    "LMDMaskSchedulerOutput",
    "LMDModel",
    "LMDModelOutput",
    "LMDInpaintPipeline",
    "LMDPipeline",
    "LMDPipelineOutput",
    "LMDForImageClassification",
    "LMDImageClassifierOutput",
    "EfficiencyTracker",
    "ReconstructionMetrics",
    "check_compatible",
    "decode_latents",
    "downsample_factor",
    "encode_images",
    "estimate_latent_stats",
    "evaluate_reconstruction",
    "keep_visible",
    "latent_channels",
    "patchify",
    "pixel_mask_to_token_mask",
    "psnr",
    "random_mask",
    "set_latent_stats",
    "unpatchify",
]
