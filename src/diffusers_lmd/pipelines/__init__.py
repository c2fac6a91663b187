"""Diffusers pipelines for Latent Masking Diffusion: reconstruction, inpainting and generation."""

from .pipeline_lmd import LMDPipeline
from .pipeline_lmd_inpaint import LMDInpaintPipeline
from .pipeline_output import LMDPipelineOutput

__all__ = ["LMDInpaintPipeline", "LMDPipeline", "LMDPipelineOutput"]
