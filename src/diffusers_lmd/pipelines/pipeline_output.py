"""Output of the LMD pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class LMDPipelineOutput(BaseOutput):
    """Output of :class:`LMDPipeline` and :class:`LMDInpaintPipeline`.

    Args:
        images: the completed images: a list of PIL images, a ``B x H x W x 3`` array in ``[0, 1]``, a
            ``B x 3 x H x W`` tensor in ``[0, 1]``, or the normalised latents for ``output_type="latent"``.
        mask: the token mask the pipeline started from, ``B x L`` (1 = predicted by the model, 0 = kept from
            the input); all ones for generation. Tokens are latent patches in row-major order.
        image_size: ``(height, width)`` in pixels the pipeline worked at, after any resizing of the input.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    mask: torch.Tensor
    image_size: tuple[int, int]
