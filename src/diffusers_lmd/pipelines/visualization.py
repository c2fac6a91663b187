"""Pictures of what a pipeline does: original | masked input | reconstruction, one row per image.

Run as a script to make the figure of ``docs/pipeline.md`` from a saved pipeline::

    python -m diffusers_lmd.pipelines.visualization demo-output/pipeline --output docs/images/reconstruction.png

Without ``--images`` it uses crops of the demo photo held out of training (``diffusers_lmd.data``).
"""

from __future__ import annotations

import argparse

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import PipelineImageInput

from ..evaluation import masked_images
from .pipeline_lmd_base import LMDBasePipeline


def masked_input(pipe: LMDBasePipeline, image: PipelineImageInput, mask: torch.Tensor, size: tuple[int, int]):
    """``image`` as the pipeline saw it (``B x 3 x H x W`` in ``[0, 1]``) with masked tokens' pixels grey."""
    pixels = pipe.image_processor.denormalize(pipe.prepare_image(image, *size)[0])
    return pixels, masked_images(pixels, mask.cpu(), pipe.patch_pixels, fill=0.5)


def comparison_grid(
    pipe: LMDBasePipeline,
    image: PipelineImageInput,
    mask_ratio: float = 0.75,
    generator: torch.Generator | list[torch.Generator] | None = None,
    scale: int = 1,
    gap: int = 2,
) -> PIL.Image.Image:
    """Reconstruct ``image`` with ``pipe`` and lay out original | masked | reconstruction, one row per image.

    ``scale`` enlarges every pixel (nearest) so small images stay legible; ``gap`` white pixels separate cells.
    """
    out = pipe(image=image, mask_ratio=mask_ratio, generator=generator, output_type="pt")
    originals, masked = masked_input(pipe, image, out.mask, out.image_size)
    cells = [originals, masked, out.images.cpu().float()]
    if scale > 1:
        cells = [c.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3) for c in cells]
    batch, _, height, width = cells[0].shape
    grid = torch.ones(3, batch * (height + gap) - gap, 3 * (width + gap) - gap)
    for row in range(batch):
        for column, cell in enumerate(cells):
            top, left = row * (height + gap), column * (width + gap)
            grid[:, top : top + height, left : left + width] = cell[row]
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def _demo_images(pipe: LMDBasePipeline, num_images: int, seed: int) -> torch.Tensor:
    """The held-out demo photo as random crops and whole, at the model's resolution, in ``[0, 1]``."""
    from ..data import DEFAULT_EVAL_PHOTO, DemoCropDataset

    resolution = pipe.default_image_size[0]
    crops = DemoCropDataset([DEFAULT_EVAL_PHOTO], num_images - 1, resolution, seed=seed, include_full_photo=True)
    return torch.stack([crops[i]["pixel_values"] for i in range(len(crops))]) / 2 + 0.5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save an original | masked | reconstruction grid from a pipeline.")
    parser.add_argument("pipeline", help="A folder saved by LMDPipeline.save_pretrained (or a Hub id).")
    parser.add_argument("--output", required=True, help="Where to write the PNG.")
    parser.add_argument("--images", nargs="*", help="Image files; default: crops of the held-out demo photo.")
    parser.add_argument("--num_images", type=int, default=4, help="Demo crops to show when --images is not given.")
    parser.add_argument("--mask_ratio", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=4, help="Pixel enlargement of the grid (nearest).")
    args = parser.parse_args(argv)

    from .pipeline_lmd import LMDPipeline

    pipe = LMDPipeline.from_pretrained(args.pipeline)
    if args.images:
        images = [PIL.Image.open(path) for path in args.images]
    else:
        images = _demo_images(pipe, args.num_images, args.seed)
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(len(images))]
    grid = comparison_grid(pipe, images, args.mask_ratio, generators, scale=args.scale)
    grid.save(args.output)
    print(f"Wrote {args.output} ({len(images)} images, mask ratio {args.mask_ratio}).")


if __name__ == "__main__":
    main()
