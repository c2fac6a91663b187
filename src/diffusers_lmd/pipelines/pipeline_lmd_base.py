"""Shared machinery of the LMD pipelines: components, input checks, encoding, masking and the unmasking loop.

Every task completes a partly masked latent. Reconstruction and inpainting start from an encoded image
with some tokens masked, generation from a fully masked latent. One loop serves all three: the model
predicts the masked tokens and ``LMDMaskScheduler.step`` reveals a share of them, keeping visible
latents exactly, until none is masked. A single step is SPEC §4's one-shot reconstruction. With a
diffusion head, the scheduler first picks the tokens to reveal and the head samples just those
(``head_scheduler`` runs its denoising steps); with guidance, the conditional and unconditional inputs
share one transformer batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline, VQModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.utils import logging
from transformers import CLIPTextModel, CLIPTokenizer

from ..masking import check_mask_ratio, keep_visible, pixel_mask_to_token_mask, random_mask
from ..models import LMDModel
from ..projector import check_compatible, decode_latents, downsample_factor, encode_images
from ..schedulers import LMDMaskScheduler
from .conditioning import CONDITION_INPUTS, LMDConditioningMixin, condition_count
from .image_inputs import images_to_rgb, mask_to_float, pixel_size, token_multiple_size
from .pipeline_output import LMDPipelineOutput
from .unmasking import DEFAULT_HEAD_INFERENCE_STEPS, Generator, LMDUnmaskingMixin, StepCallback

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class LMDBasePipeline(LMDUnmaskingMixin, LMDConditioningMixin, DiffusionPipeline):
    """Components and steps shared by :class:`LMDPipeline` and :class:`LMDInpaintPipeline`; not called directly.

    Args:
        vae: the frozen projector, a ``VQModel`` or ``AutoencoderKL`` whose config holds the latent
            ``scaling_factor`` (and ``shift_factor``) the transformer was trained with.
        transformer: the ``LMDModel`` that predicts masked latent patches from visible ones.
        scheduler: the ``LMDMaskScheduler`` that decides how many masked tokens each step reveals.
        tokenizer / text_encoder: a text-conditional transformer's frozen ``CLIPTokenizer`` and ``CLIPTextModel``;
            ``None`` for class- and unconditional pipelines.
        head_scheduler: the diffusers scheduler (``DDIMScheduler`` or ``DDPMScheduler``) that samples with a
            diffusion head; default: a ``DDIMScheduler`` on the head's training noise schedule. ``None`` for an
            MSE head.
        id2label: class names of a class-conditional transformer, ``{id: "name"}`` (several names of one class
            separated by commas), saved in ``model_index.json``; :meth:`get_label_ids` maps names to ids.
    """

    # diffusers' order for an image-to-image pipeline: the transformer is offloaded when the projector decodes.
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["tokenizer", "text_encoder", "head_scheduler"]
    _callback_tensor_inputs = ["latents", "mask"]

    def __init__(
        self,
        vae: VQModel | AutoencoderKL,
        transformer: LMDModel,
        scheduler: LMDMaskScheduler,
        tokenizer: CLIPTokenizer | None = None,
        text_encoder: CLIPTextModel | None = None,
        head_scheduler: DDIMScheduler | DDPMScheduler | None = None,
        id2label: dict | None = None,
    ):
        super().__init__()
        check_compatible(vae, transformer)
        if (tokenizer is None) != (text_encoder is None):
            raise ValueError("Pass both tokenizer and text_encoder (for a text-conditional transformer), or neither.")
        if head_scheduler is None and transformer.diffusion_head is not None:
            head_scheduler = DDIMScheduler.from_config(transformer.diffusion_head.noise_scheduler.config)
        self.register_modules(
            vae=vae,
            transformer=transformer,
            scheduler=scheduler,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            head_scheduler=head_scheduler,
        )
        self._set_id2label(id2label)
        factor = downsample_factor(vae)
        # Inputs are always images, never latents: channel count 0 keeps the processor from passing one through.
        self.image_processor = VaeImageProcessor(vae_scale_factor=factor, vae_latent_channels=0)
        self.mask_processor = VaeImageProcessor(
            vae_scale_factor=factor,
            vae_latent_channels=0,
            do_normalize=False,
            do_binarize=True,
            do_convert_grayscale=True,
        )

    @property
    def patch_pixels(self) -> int:
        """Side in pixels of the image area behind one token: the projector's downsampling x the patch size."""
        return downsample_factor(self.vae) * self.transformer.config.patch_size

    @property
    def default_image_size(self) -> tuple[int, int]:
        """The resolution the transformer was built for: ``sample_size`` x the projector's downsampling factor."""
        size = self.transformer.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        factor = downsample_factor(self.vae)
        return height * factor, width * factor

    # ----------------------------------------------------------------------------------------- checks
    def check_inputs(
        self,
        image: PipelineImageInput | None,
        mask_image: PipelineImageInput | None,
        mask_ratio: float | None,
        batch_size: int | None,
        num_inference_steps: int,
        height: int | None,
        width: int | None,
        output_type: str,
        callback_on_step_end_tensor_inputs: Sequence[str] | None,
    ) -> None:
        """Raise a ``ValueError`` naming the first problem with the call's arguments."""
        check_compatible(self.vae, self.transformer)
        if image is None and batch_size is None:
            raise ValueError(
                "Pass `image` to reconstruct or inpaint, or `batch_size` (or `class_labels` / `prompt`) to generate "
                "new images."
            )
        if image is not None and batch_size is not None:
            raise ValueError("`batch_size` is for generation; with `image`, one image is returned per input image.")
        if image is None and (mask_image is not None or mask_ratio is not None):
            raise ValueError("`mask_image` and `mask_ratio` mask an input: pass the `image` they apply to.")
        if mask_image is not None and mask_ratio is not None:
            raise ValueError("Pass either `mask_image` (inpainting) or `mask_ratio` (random mask), not both.")
        if mask_ratio is not None:
            check_mask_ratio(mask_ratio, allow_one=True)
        if mask_image is not None and pixel_size(mask_image, is_mask=True) != pixel_size(image):
            raise ValueError(
                f"mask_image is {pixel_size(mask_image, is_mask=True)} (height, width) but image is "
                f"{pixel_size(image)}: give a mask of the same size as the image."
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}.")
        if (height is None) != (width is None):
            raise ValueError("Pass both `height` and `width`, or neither.")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (value < 1 or value % self.patch_pixels):
                raise ValueError(
                    f"{name}={value} must be a positive multiple of {self.patch_pixels} "
                    "(the projector's downsampling factor x the transformer's patch size)."
                )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or () if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}, got {unknown}."
            )

    @staticmethod
    def _check_generator(generator: Generator, batch_size: int) -> None:
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for a batch of {batch_size}: pass one per image, "
                "or a single generator."
            )

    # ------------------------------------------------------------------------------------ preparation
    def working_size(self, input_size: tuple[int, int], height: int | None, width: int | None) -> tuple[int, int]:
        """The size images are processed at: ``height x width`` if given, else the input's own size when it splits
        into whole tokens, else that size rounded down to a multiple of :attr:`patch_pixels` (keeping the aspect
        ratio, as diffusers' ``VaeImageProcessor`` rounds to its ``vae_scale_factor``), with a warning."""
        if height is not None:
            return height, width
        size = token_multiple_size(input_size, self.patch_pixels)
        if size != tuple(input_size):
            logger.warning(
                f"Image size {input_size[0]}x{input_size[1]} is not a multiple of {self.patch_pixels} pixels (one "
                f"token); resizing to {size[0]}x{size[1]}."
            )
        return size

    def prepare_image(
        self, image: PipelineImageInput, height: int | None = None, width: int | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Any image input -> ``B x 3 x H x W`` in ``[-1, 1]`` at :meth:`working_size`, and that size."""
        image = images_to_rgb(image)
        size = self.working_size(pixel_size(image), height, width)
        # Contiguous whatever the input layout, so PIL, NumPy and tensor inputs take the same kernels: same bits.
        return self.image_processor.preprocess(image, height=size[0], width=size[1]).contiguous(), size

    def prepare_mask_image(
        self, mask_image: PipelineImageInput, size: tuple[int, int], batch_size: int
    ) -> torch.Tensor:
        """A pixel mask (white = redo) -> ``B x L`` token mask; a token is masked if any pixel behind it is."""
        pixels = self.mask_processor.preprocess(mask_to_float(mask_image), height=size[0], width=size[1])
        if pixels.shape[0] == 1:
            pixels = pixels.expand(batch_size, -1, -1, -1)
        elif pixels.shape[0] != batch_size:
            raise ValueError(f"Got {pixels.shape[0]} masks for {batch_size} images: pass one mask, or one per image.")
        return pixel_mask_to_token_mask(pixels, self.patch_pixels)

    @staticmethod
    def prepare_random_mask(batch_size: int, num_tokens: int, mask_ratio: float, generator: Generator) -> torch.Tensor:
        """A ``B x L`` uniform random mask; with a list of generators, row ``i`` is drawn from generator ``i``."""
        if isinstance(generator, list):
            return torch.cat([random_mask(1, num_tokens, mask_ratio, generator=g) for g in generator])
        return random_mask(batch_size, num_tokens, mask_ratio, generator=generator)

    @staticmethod
    def _onload(module: torch.nn.Module) -> None:
        """Under ``enable_model_cpu_offload``, move ``module`` to the execution device before reading its device."""
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and hasattr(hook, "pre_forward"):
            hook.pre_forward(module)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[-1, 1]`` -> normalised latents, in the projector's dtype (kept so through unmasking, so
        visible latents are exactly the encoded ones whatever the transformer's dtype)."""
        self._onload(self.vae)
        return encode_images(self.vae, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images in about ``[-1, 1]``."""
        self._onload(self.vae)
        return decode_latents(self.vae, latents)

    def _run(
        self,
        image: PipelineImageInput | None,
        mask_image: PipelineImageInput | None,
        mask_ratio: float | None,
        batch_size: int | None,
        num_inference_steps: int,
        height: int | None,
        width: int | None,
        generator: Generator,
        output_type: str,
        return_dict: bool,
        callback_on_step_end: StepCallback,
        callback_on_step_end_tensor_inputs: Sequence[str],
        condition_inputs: dict | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        num_head_inference_steps: int | None = None,
    ) -> LMDPipelineOutput | tuple:
        """Check, prepare the conditions, the starting latent and mask, unmask, decode: the body of every task.

        ``condition_inputs`` holds the conditioning arguments of :meth:`LMDConditioningMixin.prepare_conditions`
        (``class_labels``, ``prompt``, ``negative_prompt``, ``prompt_embeds``... ).
        """
        condition_inputs = condition_inputs or {}
        self._interrupt = False
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if image is None and batch_size is None:  # generation: the conditions may say how many images
            batch_size = condition_count(
                condition_inputs.get("class_labels"),
                condition_inputs.get("prompt"),
                condition_inputs.get("prompt_embeds"),
            )
        self.check_inputs(
            image,
            mask_image,
            mask_ratio,
            batch_size,
            num_inference_steps,
            height,
            width,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        self.check_condition_inputs(
            **{name: condition_inputs.get(name) for name in CONDITION_INPUTS},
            guidance_scale=guidance_scale,
            temperature=temperature,
            num_head_inference_steps=num_head_inference_steps,
        )
        device = self._execution_device
        if image is not None:
            images, size = self.prepare_image(image, height, width)
            batch_size = images.shape[0]
            self._check_generator(generator, batch_size)
            latents = self.encode(images.to(device))
            if mask_image is not None:
                mask = self.prepare_mask_image(mask_image, size, batch_size)
            else:
                num_tokens = self.transformer.num_tokens(*latents.shape[2:])
                mask = self.prepare_random_mask(
                    batch_size, num_tokens, 0.75 if mask_ratio is None else mask_ratio, generator
                )
        else:
            self._check_generator(generator, batch_size)
            size = (height, width) if height is not None else self.default_image_size
            factor = downsample_factor(self.vae)
            shape = (batch_size, self.transformer.config.in_channels, size[0] // factor, size[1] // factor)
            latents = torch.zeros(shape, device=device, dtype=self.vae.dtype)  # every value will be predicted
            mask = torch.ones(batch_size, self.transformer.num_tokens(*shape[2:]))
        mask = mask.to(device)
        # Masked tokens start at the mean latent (0), not at the image's own encoding: nothing of what is to be
        # predicted reaches a callback or an interrupted call's output. The transformer never sees masked values.
        latents = keep_visible(latents, torch.zeros_like(latents), mask, self.transformer.config.patch_size)
        conditions = self.prepare_conditions(batch_size, device, guidance_scale, **condition_inputs)

        latents = self.unmask(
            latents,
            mask,
            num_inference_steps,
            generator,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            conditions,
            guidance_scale,
            temperature,
            num_head_inference_steps or DEFAULT_HEAD_INFERENCE_STEPS,
        )
        if output_type == "latent":
            images = latents
        else:
            images = self.image_processor.postprocess(self.decode(latents), output_type=output_type)
        self.maybe_free_model_hooks()

        output = LMDPipelineOutput(images=images, mask=mask, image_size=tuple(size))
        return output if return_dict else output.to_tuple()
