"""Hub entry point for LMD checkpoints: ``DiffusionPipeline.from_pretrained(..., custom_pipeline=...)``.

A checkpoint repository (or folder) made by ``LMDPipeline.save_pretrained`` can carry this file so that
code which only knows ``DiffusionPipeline`` loads it::

    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained("user/lmd-model", custom_pipeline="lmd_pipeline", trust_remote_code=True)

The pipeline itself lives in the ``diffusers_lmd`` package (``pip install diffusers-lmd``), which the
model and scheduler classes come from too; this file only names it for diffusers' loader. Diffusers picks
the one ``DiffusionPipeline`` subclass a custom pipeline file defines, so the package is imported as a
module rather than by class name.
"""

from diffusers_lmd import pipelines as lmd_pipelines


class LMDPipeline(lmd_pipelines.LMDPipeline):
    """Reconstruction (``image``), inpainting (``image`` + ``mask_image``) and generation (``batch_size``)
    with Latent Masking Diffusion; see ``diffusers_lmd.LMDPipeline`` for the arguments."""
