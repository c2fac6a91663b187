"""Image and mask inputs of the LMD pipelines: argument checks, any-mode images to RGB, sizes, and token masks.

``VaeImageProcessor`` takes NumPy arrays and tensors as they come, so grayscale and RGBA arrays are made
RGB here first, the way the data layer treats PIL images (transparency composited on white). Layouts
follow diffusers: NumPy ``H x W x C`` or ``B x H x W x C`` in ``[0, 1]`` (``uint8`` is also accepted),
tensors ``C x H x W`` or ``B x C x H x W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import PipelineImageInput
from diffusers.utils import logging

from ..data.transforms import to_rgb as pil_to_rgb
from ..masking import check_mask_ratio, keep_visible, pixel_mask_to_token_mask, random_mask
from ..projector import check_compatible, decode_latents, downsample_factor, encode_images

logger = logging.get_logger(__name__)

DEFAULT_MASK_RATIO = 0.75  # MAE's
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def check_image_inputs(
    image: PipelineImageInput | None,
    mask_image: PipelineImageInput | None,
    mask_ratio: float | None,
    batch_size: int | None,
    height: int | None,
    width: int | None,
    patch_pixels: int,
    num_images_per_prompt: int = 1,
) -> None:
    """Raise a ``ValueError`` naming the first problem with a call's image, mask, batch and size arguments."""
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
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be an integer of at least 1, got {num_images_per_prompt!r}.")
    if (height is None) != (width is None):
        raise ValueError("Pass both `height` and `width`, or neither.")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (value < 1 or value % patch_pixels):
            raise ValueError(
                f"{name}={value} must be a positive multiple of {patch_pixels} "
                "(the projector's downsampling factor x the transformer's patch size)."
            )


def _fix_channels(image: np.ndarray | torch.Tensor, axis: int) -> np.ndarray | torch.Tensor:
    """Grayscale (1 channel) repeated to RGB, RGBA (4 channels) composited on white, RGB unchanged."""
    channels = image.shape[axis]
    if channels == 3:
        return image
    if channels == 4:
        rgb, alpha = (image[..., :3], image[..., 3:]) if axis == -1 else (image[..., :3, :, :], image[..., 3:, :, :])
        return rgb * alpha + (1 - alpha)
    if channels == 1:
        return np.repeat(image, 3, axis=axis) if isinstance(image, np.ndarray) else image.repeat_interleave(3, dim=axis)
    layout = "H x W x C" if axis == -1 else "C x H x W"
    raise ValueError(
        f"Images must have 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, got shape {tuple(image.shape)}; "
        f"arrays are read as {layout}."
    )


def images_to_rgb(image: PipelineImageInput) -> PipelineImageInput:
    """Convert grayscale and RGBA images to RGB in their own format; ``uint8`` arrays are scaled to ``[0, 1]``."""
    if isinstance(image, (list, tuple)):
        return [images_to_rgb(item) for item in image]
    if isinstance(image, PIL.Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        return _fix_channels(image[..., None] if image.ndim == 2 else image, axis=-1)
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        return _fix_channels(image[None] if image.ndim == 2 else image, axis=-3)
    raise TypeError(f"image must be a PIL image, a NumPy array, a torch tensor or a list of them, got {type(image)}.")


def mask_to_float(mask: PipelineImageInput) -> PipelineImageInput:
    """Make array masks float in ``[0, 1]`` (``uint8`` 0/255 and ``bool`` accepted) and tensors at least 3-D."""
    if isinstance(mask, (list, tuple)):
        return [mask_to_float(item) for item in mask]
    if isinstance(mask, np.ndarray):
        return mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
    if isinstance(mask, torch.Tensor):
        mask = mask.float() / 255.0 if mask.dtype == torch.uint8 else mask.float()
        return mask[None] if mask.ndim == 2 else mask
    if isinstance(mask, PIL.Image.Image):
        return mask
    raise TypeError(
        f"mask_image must be a PIL image, a NumPy array, a torch tensor or a list of them, got {type(mask)}."
    )


def pixel_size(image: PipelineImageInput, is_mask: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image input (the first one of a list or batch).

    A 3-D NumPy mask is ``H x W x 1`` or a ``B x H x W`` batch, as ``VaeImageProcessor`` reads it.
    """
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("Got an empty list of images.")
        return pixel_size(image[0], is_mask)
    if isinstance(image, PIL.Image.Image):
        return image.height, image.width
    if isinstance(image, torch.Tensor):
        return tuple(image.shape[-2:])
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            return tuple(image.shape)
        if image.ndim == 4 or (is_mask and image.shape[-1] != 1):
            return tuple(image.shape[1:3])
        return tuple(image.shape[:2])
    raise TypeError(f"Expected a PIL image, a NumPy array or a torch tensor, got {type(image)}.")


def working_size(input_size: tuple[int, int], patch_pixels: int) -> tuple[int, int]:
    """The size an image is processed at: its own when it splits into whole tokens, else rounded down to multiples of
    ``patch_pixels`` (keeping the aspect ratio, as diffusers' ``VaeImageProcessor`` rounds to its
    ``vae_scale_factor``), with a warning."""
    size = token_multiple_size(input_size, patch_pixels)
    if size != tuple(input_size):
        logger.warning(
            f"Image size {input_size[0]}x{input_size[1]} is not a multiple of {patch_pixels} pixels (one "
            f"token); resizing to {size[0]}x{size[1]}."
        )
    return size


def token_multiple_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``(height, width)`` rounded down to multiples of ``multiple`` (at least one each), so the aspect ratio is kept
    up to the rounding: what diffusers' ``VaeImageProcessor`` does with its ``vae_scale_factor``."""
    if multiple < 1:
        raise ValueError(f"multiple must be a positive number of pixels, got {multiple}.")
    return tuple(max(multiple, side - side % multiple) for side in size)


class LMDImageInputsMixin:
    """Image and mask inputs for :class:`~diffusers_lmd.LMDPipeline`, whose ``vae``, ``transformer``,
    ``image_processor``, ``mask_processor`` and ``_callback_tensor_inputs`` these read: checks, preprocessing, the
    starting latents and token mask, and decoding through the projector."""

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
        num_images_per_prompt: int = 1,
    ) -> None:
        """Raise a ``ValueError`` naming the first problem with the call's image, mask, size and output arguments
        (:meth:`check_condition_inputs` checks the conditions, :meth:`check_latents` the head's noise)."""
        check_compatible(self.vae, self.transformer)
        check_image_inputs(
            image, mask_image, mask_ratio, batch_size, height, width, self.patch_pixels, num_images_per_prompt
        )
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or () if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}, got {unknown}."
            )

    def check_latents(self, latents: torch.Tensor | None, batch_size: int, size: tuple[int, int]) -> None:
        """``latents``, the diffusion head's starting noise, must be ``batch_size x C x h x w``: the latent of the
        ``size`` image, one per output image; the MSE and categorical heads start from no noise."""
        if latents is None:
            return
        if self.transformer.diffusion_head is None:
            raise ValueError(
                "latents is the diffusion head's starting noise; this transformer has head_type="
                f"{self.transformer.config.head_type!r}, which starts from no noise: leave latents unset."
            )
        factor = downsample_factor(self.vae)
        shape = (batch_size, self.transformer.config.in_channels, size[0] // factor, size[1] // factor)
        if tuple(latents.shape) != shape:
            raise ValueError(
                f"latents must have shape {shape} (images x latent channels x latent height x width), got "
                f"{tuple(latents.shape)}."
            )

    def prepare_image(
        self, image: PipelineImageInput, height: int | None = None, width: int | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Any image input -> ``B x 3 x H x W`` in ``[-1, 1]``, and the size used: ``height x width`` if given,
        else the input's own size rounded down to whole tokens (:func:`working_size`)."""
        image = images_to_rgb(image)
        size = (height, width) if height is not None else working_size(pixel_size(image), self.patch_pixels)
        # Contiguous whatever the input layout, so PIL, NumPy and tensor inputs take the same kernels: same bits.
        return self.image_processor.preprocess(image, height=size[0], width=size[1]).contiguous(), size

    def prepare_mask(
        self,
        mask_image: PipelineImageInput | None,
        mask_ratio: float | None,
        size: tuple[int, int],
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        num_images_per_prompt: int = 1,
    ) -> torch.Tensor:
        """The ``B x L`` token mask of a ``size`` image: a token is masked if any pixel behind it is white in
        ``mask_image`` (one for the batch, or one per input image, repeated for its ``num_images_per_prompt``
        outputs), else a uniform random share ``mask_ratio`` (default 0.75) is; with a list of generators, row ``i``
        is drawn from generator ``i``."""
        if mask_image is not None:
            pixels = self.mask_processor.preprocess(mask_to_float(mask_image), height=size[0], width=size[1])
            if pixels.shape[0] == 1:
                pixels = pixels.expand(batch_size, -1, -1, -1)
            elif pixels.shape[0] * num_images_per_prompt == batch_size:
                pixels = pixels.repeat_interleave(num_images_per_prompt, dim=0)
            else:
                raise ValueError(
                    f"Got {pixels.shape[0]} masks for {batch_size // num_images_per_prompt} images: pass one mask, "
                    "or one per image."
                )
            return pixel_mask_to_token_mask(pixels, self.patch_pixels)
        ratio = DEFAULT_MASK_RATIO if mask_ratio is None else mask_ratio
        num_tokens = (size[0] // self.patch_pixels) * (size[1] // self.patch_pixels)
        if isinstance(generator, list):
            return torch.cat([random_mask(1, num_tokens, ratio, generator=g) for g in generator])
        return random_mask(batch_size, num_tokens, ratio, generator=generator)

    def prepare_latents(
        self,
        images: torch.Tensor | None,
        mask_image: PipelineImageInput | None,
        mask_ratio: float | None,
        batch_size: int,
        size: tuple[int, int],
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
        num_images_per_prompt: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting latents (in the projector's dtype) and ``B x L`` token mask: the encoded ``images`` with the
        tokens under ``mask_image``'s white pixels masked, or a random share (``mask_ratio``); without images, a fully
        masked ``size`` latent. Masked tokens start at the mean latent, 0, not at the image's own encoding: nothing of
        what is to be predicted reaches a callback or an interrupted call's output."""
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for a batch of {batch_size}: pass one per output image "
                "(num_images_per_prompt of each), or a single generator."
            )
        if images is None:  # generation: every value will be predicted
            factor = downsample_factor(self.vae)
            shape = (batch_size, self.transformer.config.in_channels, size[0] // factor, size[1] // factor)
            mask = torch.ones(batch_size, self.transformer.num_tokens(*shape[2:]), device=device)
            return torch.zeros(shape, device=device, dtype=self.vae.dtype), mask
        self._onload(self.vae)
        latents = encode_images(self.vae, images.to(device))
        mask = self.prepare_mask(mask_image, mask_ratio, size, batch_size, generator, num_images_per_prompt)
        mask = mask.to(device)
        return keep_visible(latents, torch.zeros_like(latents), mask, self.transformer.config.patch_size), mask

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> images in about ``[-1, 1]``."""
        self._onload(self.vae)
        return decode_latents(self.vae, latents)

    @staticmethod
    def _onload(module: torch.nn.Module) -> None:
        """Under ``enable_model_cpu_offload``, move ``module`` to the execution device before a call that is not its
        ``forward`` (offload hooks wrap ``forward`` only)."""
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and hasattr(hook, "pre_forward"):
            hook.pre_forward(module)
