"""Hub entry point for LMD checkpoints: ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)``.

A checkpoint repository (or folder) saved by ``LMDPipeline.save_pretrained`` carries this file, and its
``model_index.json`` names it (``"_class_name": ["lmd_pipeline", "LMDPipeline"]``), so code which only knows
``DiffusionPipeline`` loads it::

    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained("user/lmd-model", trust_remote_code=True)
    # a folder saved before model_index.json named this file: add custom_pipeline="lmd_pipeline"

The pipeline itself lives in the ``diffusers_lmd`` package, which the model and scheduler classes come from too,
and which no package index serves: install it from a clone of its repository with ``pip install .``, or build a
wheel there (``pip wheel --no-deps -w dist .``) and ``pip install dist/diffusers_lmd-*.whl`` where it is needed.
This file only names the pipeline for diffusers' loader. Diffusers picks the one ``DiffusionPipeline`` subclass a
custom pipeline file defines, so the package is imported as a module rather than by class name.
"""

from diffusers_lmd import pipelines as lmd_pipelines


class LMDPipeline(lmd_pipelines.LMDPipeline):
    """Reconstruction (``image``), inpainting (``image`` + ``mask_image``) and generation (``batch_size``)
    with Latent Masking Diffusion; see ``diffusers_lmd.LMDPipeline`` for the arguments."""
