"""``LMDInpaintPipeline``: redo the masked regions of images with a Latent Masking Diffusion model (method.md §4)."""

from __future__ import annotations

from diffusers.image_processor import PipelineImageInput

from .pipeline_lmd import LMDPipeline


class LMDInpaintPipeline(LMDPipeline):
    """Pipeline for inpainting with Latent Masking Diffusion: [`LMDPipeline`] with ``image`` and ``mask_image`` both
    required, as diffusers keeps one task per class.

    The pixel mask is mapped to latent patches (a patch is redone if any of its pixels is white), the
    ``transformer`` predicts those patches from the rest, and the projector decodes; every latent patch
    outside the mask is kept exactly as encoded; a diffusion head samples the redone patches, and a conditional
    transformer takes ``class_labels`` or a ``prompt`` as in [`LMDPipeline`]. Shares its components with it:
    ``LMDInpaintPipeline.from_pipe(pipe)`` reuses a loaded one without copying weights.

    Call it as [`LMDPipeline`] with:
        image: PIL image(s), arrays or tensors in ``[0, 1]``.
        mask_image: pixel mask of the same size, white (>= 0.5, as diffusers binarises masks) = redo; one for
            the batch or one per image.
        num_inference_steps: unmasking steps; 1 (the default) predicts every masked patch at once, more reveal them
            progressively, each step conditioning on what earlier steps filled in.
        height, width, generator, output_type, return_dict, callbacks, and the conditioning and sampling arguments
            (``class_labels``, ``prompt`` ..., ``guidance_scale``, ``temperature``, ``num_head_inference_steps``,
            ``prediction``):
            as for [`LMDPipeline`].

    Example:
        ```py
        >>> from PIL import Image
        >>> from diffusers_lmd import LMDInpaintPipeline

        >>> pipe = LMDInpaintPipeline.from_pretrained("path/to/lmd-pipeline")
        >>> out = pipe(image=Image.open("photo.png"), mask_image=Image.open("mask.png"))
        >>> out.images[0].save("inpainted.png")
        ```
    """

    def check_inputs(
        self, image: PipelineImageInput | None, mask_image: PipelineImageInput | None, *args, **kwargs
    ) -> None:
        """:meth:`LMDPipeline.check_inputs`, with both ``image`` and ``mask_image`` required."""
        if image is None or mask_image is None:
            raise ValueError(
                "LMDInpaintPipeline needs both `image` and `mask_image` (white = redo); use LMDPipeline to "
                "reconstruct from a random mask or to generate."
            )
        super().check_inputs(image, mask_image, *args, **kwargs)
