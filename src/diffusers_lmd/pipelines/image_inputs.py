"""Input normalisation for the LMD pipelines: any-mode images to RGB, masks to float, and pixel sizes.

``VaeImageProcessor`` takes NumPy arrays and tensors as they come, so grayscale and RGBA arrays are made
RGB here first, the way the data layer treats PIL images (transparency composited on white). Layouts
follow diffusers: NumPy ``H x W x C`` or ``B x H x W x C`` in ``[0, 1]`` (``uint8`` is also accepted),
tensors ``C x H x W`` or ``B x C x H x W``.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import PipelineImageInput

from ..data.transforms import to_rgb as pil_to_rgb


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


def token_multiple_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``(height, width)`` rounded down to multiples of ``multiple`` (at least one each), so the aspect ratio is kept
    up to the rounding: what diffusers' ``VaeImageProcessor`` does with its ``vae_scale_factor``."""
    if multiple < 1:
        raise ValueError(f"multiple must be a positive number of pixels, got {multiple}.")
    return tuple(max(multiple, side - side % multiple) for side in size)
