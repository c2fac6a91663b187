"""``LMDInpaintPipeline``: redo the masked regions of images with a Latent Masking Diffusion model (SPEC §4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.image_processor import PipelineImageInput

from .conditioning import ClassLabelInput, PromptInput
from .pipeline_lmd_base import Generator, LMDBasePipeline, StepCallback
from .pipeline_output import LMDPipelineOutput


class LMDInpaintPipeline(LMDBasePipeline):
    """Pipeline for inpainting with Latent Masking Diffusion.

    The pixel mask is mapped to latent patches (a patch is redone if any of its pixels is white), the
    ``transformer`` predicts those patches from the rest, and the projector decodes; every latent patch
    outside the mask is kept exactly as encoded; a diffusion head samples the redone patches, and a conditional
    transformer takes ``class_labels`` or a ``prompt`` as in [`LMDPipeline`]. Shares its components with it:
    ``LMDInpaintPipeline.from_pipe(pipe)`` reuses a loaded one without copying weights.

    Args:
        vae: the frozen projector, a ``VQModel`` or ``AutoencoderKL``.
        transformer: the ``LMDModel``; its ``in_channels`` must equal the projector's latent channels.
        scheduler: an ``LMDMaskScheduler``.
        tokenizer / text_encoder / head_scheduler / id2label: as for [`LMDPipeline`].

    Example:
        ```py
        >>> from PIL import Image
        >>> from diffusers_lmd import LMDInpaintPipeline

        >>> pipe = LMDInpaintPipeline.from_pretrained("path/to/lmd-pipeline")
        >>> out = pipe(image=Image.open("photo.png"), mask_image=Image.open("mask.png"))
        >>> out.images[0].save("inpainted.png")
        ```
    """

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput,
        mask_image: PipelineImageInput,
        num_inference_steps: int = 1,
        height: int | None = None,
        width: int | None = None,
        generator: Generator = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        class_labels: ClassLabelInput = None,
        prompt: PromptInput = None,
        negative_prompt: PromptInput = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        num_head_inference_steps: int | None = None,
    ) -> LMDPipelineOutput | tuple:
        """Redo the white regions of ``mask_image`` in ``image``.

        Args:
            image: PIL image(s), arrays or tensors in ``[0, 1]``, as for [`LMDPipeline`].
            mask_image: pixel mask of the same size, white (>= 0.5, as diffusers binarises masks) = redo; one for
                the batch or one per image.
            num_inference_steps: unmasking steps; 1 predicts every masked patch at once, more reveal them
                progressively, each step conditioning on what earlier steps filled in.
            height, width: working size in pixels, multiples of ``pipe.patch_pixels``; default the image's own.
            generator: makes the reveal order of multi-step inpainting reproducible.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return an [`LMDPipelineOutput`] rather than a tuple ``(images, mask, image_size)``.
            callback_on_step_end: called after each step as ``callback(pipe, step, timestep, callback_kwargs)``.
            callback_on_step_end_tensor_inputs: which of ``"latents"`` and ``"mask"`` the callback receives.
            class_labels, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, prompt_attention_mask,
                negative_prompt_attention_mask, guidance_scale, temperature, num_head_inference_steps: the
                conditioning and sampling arguments of [`LMDPipeline`].
        """
        if image is None or mask_image is None:
            raise ValueError(
                "LMDInpaintPipeline needs both `image` and `mask_image` (white = redo); use LMDPipeline to "
                "reconstruct from a random mask or to generate."
            )
        return self._run(
            image=image,
            mask_image=mask_image,
            mask_ratio=None,
            batch_size=None,
            num_inference_steps=num_inference_steps,
            height=height,
            width=width,
            generator=generator,
            output_type=output_type,
            return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            condition_inputs=dict(
                class_labels=class_labels,
                prompt=prompt,
                negative_prompt=negative_prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                prompt_attention_mask=prompt_attention_mask,
                negative_prompt_attention_mask=negative_prompt_attention_mask,
            ),
            guidance_scale=guidance_scale,
            temperature=temperature,
            num_head_inference_steps=num_head_inference_steps,
        )
