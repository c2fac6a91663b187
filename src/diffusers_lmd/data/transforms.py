"""Image decoding and preprocessing with PIL, numpy and torch only (no torchvision).

Every image, whatever its mode or size, becomes a ``3 x R x R`` float tensor in ``[-1, 1]``: converted to
RGB, its shorter side resized to ``R``, then center- or randomly cropped. Random flips are *not* applied
here but by the consumer through :func:`random_flip_batch`, so a latent cache can store both views exactly.
"""

from __future__ import annotations

import io
import itertools
import os

import numpy as np
import torch
from PIL import Image, ImageOps

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def open_image(source) -> Image.Image:
    """Open and fully decode an image from a PIL image, a path, raw bytes, or a ``datasets`` ``Image`` record.

    A ``datasets`` record is a dict ``{"bytes": ..., "path": ...}`` (an ``Image(decode=False)`` column).
    Decoding is forced here (``load()``) so truncated files fail now, with PIL's error, not later.
    """
    if isinstance(source, dict):
        source = source["bytes"] if source.get("bytes") is not None else source.get("path")
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray)):
        image = Image.open(io.BytesIO(source))
    elif isinstance(source, (str, os.PathLike)):
        image = Image.open(source)
    else:
        raise TypeError(f"Cannot read an image from {type(source).__name__}: pass a PIL image, a path or bytes.")
    image.load()
    return image


def image_name(source, index: int | None = None) -> str:
    """A human-readable name for an image source, for warnings: its path when known, else its row."""
    if isinstance(source, dict) and source.get("path"):
        return str(source["path"])
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    filename = getattr(source, "filename", None)
    if filename:
        return str(filename)
    return f"row {index}" if index is not None else "<in-memory image>"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: EXIF rotation applied, transparency composited on white, 16-bit scaled to 8-bit."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        image = Image.fromarray((np.asarray(image, dtype=np.float32) / 257.0).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> ``3 x H x W`` float tensor in ``[-1, 1]``."""
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def image_to_tensor(
    image: Image.Image,
    resolution: int,
    center_crop: bool = True,
    generator: torch.Generator | None = None,
    pad_to_resolution: bool = False,
) -> torch.Tensor:
    """Convert to RGB, resize the shorter side to ``resolution`` (bicubic), crop a square, scale to ``[-1, 1]``.

    Without ``center_crop`` the crop offset is drawn from ``generator``, so a seeded generator gives the same
    crop every time (which keeps a latent cache exact). With ``pad_to_resolution``, an image no larger than
    ``resolution`` on either side is centred on a black square instead of being upscaled: its pixels stay exact
    (Fashion-MNIST's 28x28 on a 32x32 canvas, whose black border is the images' own background).
    """
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {resolution}.")
    image = to_rgb(image)
    width, height = image.size
    if pad_to_resolution and width <= resolution and height <= resolution:
        canvas = Image.new("RGB", (resolution, resolution))
        canvas.paste(image, ((resolution - width) // 2, (resolution - height) // 2))
        return pil_to_tensor(canvas)
    scale = resolution / min(width, height)
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if center_crop:
        left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    else:
        left = int(torch.randint(0, new_w - resolution + 1, (1,), generator=generator))
        top = int(torch.randint(0, new_h - resolution + 1, (1,), generator=generator))
    image = image.crop((left, top, left + resolution, top + resolution))
    return pil_to_tensor(image).clamp_(-1.0, 1.0)


def random_flip_mask(
    batch_size: int, generator: torch.Generator | None = None, p: float = 0.5, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Which samples of a batch to flip: a ``(batch_size,)`` bool tensor, each True with probability ``p``.

    Exposed so a latent cache holding both views can pick the flipped one with the same draws.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"The flip probability p must be in [0, 1], got {p}.")
    gen_device = generator.device if generator is not None else "cpu"
    return (torch.rand(batch_size, generator=generator, device=gen_device) < p).to(device)


def random_flip_batch(
    pixel_values: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5
) -> torch.Tensor:
    """Horizontally flip each image of a ``B x C x H x W`` batch with probability ``p``; returns a new tensor."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be B x C x H x W, got shape {tuple(pixel_values.shape)}.")
    flip = random_flip_mask(pixel_values.shape[0], generator, p, device=pixel_values.device)
    return torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)


_CHANNEL_ORDERS = torch.tensor(list(itertools.permutations(range(3))))


def random_color_batch(
    pixel_values: torch.Tensor,
    generator: torch.Generator | None = None,
    permute_channels: bool = True,
    saturation: float = 0.0,
) -> torch.Tensor:
    """Colour augmentation of an RGB batch in ``[-1, 1]``: each image's channels in a random order (one of the
    six), and its saturation scaled by a random factor in ``[1 - saturation, 1 + saturation]``.

    For projector training on few photos: it teaches the autoencoder to keep colours it has not seen instead of
    pulling them towards the training photos' palette.
    """
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"pixel_values must be B x 3 x H x W, got shape {tuple(pixel_values.shape)}.")
    if not 0.0 <= saturation <= 1.0:
        raise ValueError(f"saturation must be in [0, 1], got {saturation}.")
    batch = pixel_values.shape[0]
    gen_device = generator.device if generator is not None else "cpu"
    if permute_channels:
        orders = _CHANNEL_ORDERS[torch.randint(len(_CHANNEL_ORDERS), (batch,), generator=generator, device=gen_device)]
        index = orders.to(pixel_values.device)[:, :, None, None].expand_as(pixel_values)
        pixel_values = torch.gather(pixel_values, 1, index)
    if saturation > 0:
        factor = 1.0 + saturation * (2.0 * torch.rand(batch, generator=generator, device=gen_device) - 1.0)
        gray = pixel_values.mean(dim=1, keepdim=True)
        pixel_values = gray + (pixel_values - gray) * factor.to(pixel_values)[:, None, None, None]
    return pixel_values.clamp(-1.0, 1.0)
