"""Pictures of what a pipeline does: original | masked input | reconstruction, one row per image; or, for a
class-conditional pipeline, generated samples, one row per class.

Run as a script to make the figures of ``docs/pipeline.md`` from a saved pipeline::

    python -m diffusers_lmd.pipelines.visualization demo-output/pipeline --output docs/images/reconstruction.png
    python -m diffusers_lmd.pipelines.visualization fmnist-lmd --samples_per_class 8 --output docs/images/classes.png

Without ``--images`` the reconstruction grid uses crops of the demo photo held out of training.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import PipelineImageInput

from ..data import DEFAULT_EVAL_PHOTO, DemoCropDataset
from ..evaluation import masked_images
from .pipeline_lmd import LMDPipeline


def masked_input(pipe: LMDPipeline, image: PipelineImageInput, mask: torch.Tensor, size: tuple[int, int]):
    """``image`` as the pipeline saw it (``B x 3 x H x W`` in ``[0, 1]``) with masked tokens' pixels grey."""
    pixels = pipe.image_processor.denormalize(pipe.prepare_image(image, *size)[0])
    return pixels, masked_images(pixels, mask.cpu(), pipe.patch_pixels, fill=0.5)


def comparison_grid(
    pipe: LMDPipeline,
    image: PipelineImageInput,
    mask_ratio: float = 0.75,
    generator: torch.Generator | list[torch.Generator] | None = None,
    scale: int = 1,
    gap: int = 2,
    **kwargs,
) -> PIL.Image.Image:
    """Reconstruct ``image`` with ``pipe`` and lay out original | masked | reconstruction, one row per image.

    ``scale`` enlarges every pixel (nearest) so small images stay legible; ``gap`` white pixels separate cells;
    ``kwargs`` go to the pipeline (``prediction="mean"``...).
    """
    out = pipe(image=image, mask_ratio=mask_ratio, generator=generator, output_type="pt", **kwargs)
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


def tile(images: torch.Tensor, columns: int, gap: int = 2) -> PIL.Image.Image:
    """``N x 3 x H x W`` images in ``[0, 1]`` as a grid of ``columns`` per row, ``gap`` white pixels apart."""
    rows = -(-images.shape[0] // columns)
    _, _, height, width = images.shape
    grid = torch.ones(3, rows * (height + gap) - gap, columns * (width + gap) - gap)
    for i, image in enumerate(images):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        grid[:, top : top + height, left : left + width] = image
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def class_sample_grid(
    pipe: LMDPipeline,
    class_labels: Iterable[int],
    samples_per_class: int = 8,
    seed: int = 0,
    scale: int = 1,
    **kwargs,
) -> PIL.Image.Image:
    """Generate ``samples_per_class`` images of each class with the pipeline's default call and lay them out one
    row per class.

    Sample ``j`` of every class uses the generator seeded ``seed + j``; ``kwargs`` go to the pipeline
    (``guidance_scale``, ``num_inference_steps``, ``temperature``...). ``scale`` enlarges every pixel (nearest).
    """
    rows = []
    for label in class_labels:
        generators = [torch.Generator().manual_seed(seed + j) for j in range(samples_per_class)]
        out = pipe(class_labels=[int(label)] * samples_per_class, generator=generators, output_type="pt", **kwargs)
        rows.append(out.images.cpu().float())
    images = torch.cat(rows)
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return tile(images, samples_per_class)


def _demo_images(pipe: LMDPipeline, num_images: int, seed: int) -> torch.Tensor:
    """The held-out demo photo as random crops and whole, at the model's resolution, in ``[0, 1]``."""
    resolution = pipe.default_image_size[0]
    crops = DemoCropDataset([DEFAULT_EVAL_PHOTO], num_images - 1, resolution, seed=seed, include_full_photo=True)
    return torch.stack([crops[i]["pixel_values"] for i in range(len(crops))]) / 2 + 0.5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Save an original | masked | reconstruction grid from a pipeline, or with --samples_per_class a "
        "grid of class-conditional samples, one row per class."
    )
    parser.add_argument("pipeline", help="A folder saved by LMDPipeline.save_pretrained (or a Hub id).")
    parser.add_argument("--output", required=True, help="Where to write the PNG.")
    parser.add_argument("--images", nargs="*", help="Image files; default: crops of the held-out demo photo.")
    parser.add_argument("--num_images", type=int, default=4, help="Demo crops to show when --images is not given.")
    parser.add_argument("--mask_ratio", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=4, help="Pixel enlargement of the grid (nearest).")
    parser.add_argument("--samples_per_class", type=int, default=None, help="Draw a class-sample grid instead.")
    parser.add_argument(
        "--guidance_scale", type=float, default=None, help="Class samples: guidance weight (default: the pipeline's)."
    )
    parser.add_argument(
        "--num_inference_steps", type=int, default=None, help="Class samples: reveal steps (default: the pipeline's)."
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="Class samples: diffusion-head temperature.")
    args = parser.parse_args(argv)

    pipe = LMDPipeline.from_pretrained(args.pipeline)
    if args.samples_per_class is not None:
        classes = range(pipe.transformer.config.num_class_embeds or 0)
        if not classes:
            parser.error(f"{args.pipeline} is not class-conditional: --samples_per_class needs class labels.")
        extra = {"temperature": args.temperature} if pipe.transformer.config.head_type == "diffusion" else {}
        extra.update(guidance_scale=args.guidance_scale, num_inference_steps=args.num_inference_steps)
        grid = class_sample_grid(pipe, classes, args.samples_per_class, args.seed, args.scale, **extra)
        grid.save(args.output)
        print(f"Wrote {args.output} ({len(classes)} classes x {args.samples_per_class} samples).")
        return
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
