"""``LMDPipeline``: reconstruction, inpainting and generation with a Latent Masking Diffusion model (SPEC §4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.image_processor import PipelineImageInput

from .conditioning import ClassLabelInput, PromptInput
from .pipeline_lmd_base import Generator, LMDBasePipeline, StepCallback
from .pipeline_output import LMDPipelineOutput

DEFAULT_GENERATION_STEPS = 10


class LMDPipeline(LMDBasePipeline):
    """Pipeline for image reconstruction, inpainting and generation with Latent Masking Diffusion.

    The projector ``vae`` encodes the image, the ``transformer`` predicts the masked latent patches from the
    visible ones, and the projector decodes the result; visible latents are kept exactly. Generation starts
    from a fully masked latent and the ``scheduler`` reveals it over several steps. A class- or
    text-conditional transformer takes ``class_labels`` or a ``prompt``, with classifier-free guidance; a
    transformer with a diffusion head samples the masked patches (``head_scheduler``) instead of predicting
    their mean.

    This model inherits from [`DiffusionPipeline`] (saving, loading, devices, offloading).

    Args:
        vae: the frozen projector, a ``VQModel`` or ``AutoencoderKL``.
        transformer: the ``LMDModel``; its ``in_channels`` must equal the projector's latent channels.
        scheduler: an ``LMDMaskScheduler``.
        tokenizer / text_encoder: ``CLIPTokenizer`` and ``CLIPTextModel`` of a text-conditional transformer.
        head_scheduler: ``DDIMScheduler`` (default) or ``DDPMScheduler`` for a diffusion head.
        id2label: class names of a class-conditional transformer, ``{id: name}``.
    """

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput | None = None,
        mask_image: PipelineImageInput | None = None,
        mask_ratio: float | None = None,
        batch_size: int | None = None,
        num_inference_steps: int | None = None,
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
        """Reconstruct (``image``), inpaint (``image`` + ``mask_image``) or generate (``batch_size`` or conditions).

        Args:
            image: PIL image(s), ``H x W x C`` / ``B x H x W x C`` arrays or ``C x H x W`` / ``B x C x H x W``
                tensors in ``[0, 1]``; grayscale and RGBA are converted to RGB. A side that is not a multiple of
                ``pipe.patch_pixels`` is rounded down to one, keeping the aspect ratio (``output.image_size`` says
                which size was used).
            mask_image: pixel mask of the same size as ``image``, white (>= 0.5, as diffusers binarises masks) =
                redo; a latent patch is predicted if any of its pixels is white. One mask for the batch, or one per
                image.
            mask_ratio: share of latent patches masked at random, in ``[0, 1]`` (default 0.75, MAE's ratio);
                0 gives the projector's own reconstruction.
            batch_size: number of images to generate when no ``image`` is given; default: one per class label or
                prompt.
            num_inference_steps: unmasking steps; default 1 with an image (one-shot prediction of every
                masked patch) and 10 for generation.
            height, width: working size in pixels, multiples of ``pipe.patch_pixels``; default: the image's
                own size, or the model's resolution for generation.
            generator: a ``torch.Generator`` for reproducible masks and reveal orders, or one per image so
                that a batch gives the same images as one call per image.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the completed normalised latents).
            return_dict: return an [`LMDPipelineOutput`] rather than a tuple ``(images, mask, image_size)``.
            callback_on_step_end: called after each step as ``callback(pipe, step, timestep, callback_kwargs)``;
                the tensors it returns (``"latents"``, ``"mask"``) replace the pipeline's. Setting
                ``pipe._interrupt = True`` there stops after that step (``pipe.interrupt``, ``pipe.num_timesteps``
                as in diffusers' pipelines).
            callback_on_step_end_tensor_inputs: which of ``"latents"`` and ``"mask"`` the callback receives.
            class_labels: for a class-conditional transformer, class ids in ``[0, num_class_embeds)`` or names of
                ``id2label`` (see :meth:`get_label_ids`): one per image, or one for all; none = the null class
                (unconditional).
            prompt: for a text-conditional transformer, a prompt or one per image; none = the empty prompt
                (unconditional). Needs the pipeline's ``tokenizer`` and ``text_encoder``.
            negative_prompt: the unconditional branch of guidance (default: the empty prompt).
            prompt_embeds / negative_prompt_embeds: precomputed text embeddings (``B x S x cross_attention_dim``)
                instead of ``prompt`` / ``negative_prompt``, with optional ``B x S`` attention masks
                ``prompt_attention_mask`` / ``negative_prompt_attention_mask`` (1 = real token).
            guidance_scale: classifier-free guidance weight ``w`` (``uncond + w (cond - uncond)``), used when > 1;
                the conditional and unconditional inputs run in one batch.
            temperature: diffusion head only: scales the noise each sampling step adds (MAR's temperature).
            num_head_inference_steps: diffusion head only: ``head_scheduler`` steps per sampled token (default 50).

        Examples:
            ```py
            >>> import torch
            >>> from PIL import Image
            >>> from diffusers_lmd import LMDPipeline

            >>> pipe = LMDPipeline.from_pretrained("path/to/lmd-pipeline")
            >>> image = Image.open("photo.png")

            >>> # Reconstruction: mask 75% of the latent patches at random and predict them.
            >>> out = pipe(image=image, mask_ratio=0.75, generator=torch.Generator().manual_seed(0))
            >>> out.images[0].save("reconstruction.png")

            >>> # Inpainting: white pixels of the mask are redone.
            >>> out = pipe(image=image, mask_image=Image.open("mask.png"))

            >>> # Generation by progressive unmasking from a fully masked latent.
            >>> out = pipe(batch_size=4, num_inference_steps=10, generator=torch.Generator().manual_seed(0))

            >>> # A class-conditional model with a diffusion head: one image per class name, guided.
            >>> out = pipe(class_labels=["Sneaker", "Bag"], guidance_scale=3.0, num_inference_steps=16)
            ```
        """
        if num_inference_steps is None:
            num_inference_steps = 1 if image is not None else DEFAULT_GENERATION_STEPS
        return self._run(
            image=image,
            mask_image=mask_image,
            mask_ratio=mask_ratio,
            batch_size=batch_size,
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
