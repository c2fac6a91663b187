"""What the built-in demo shows of a trained class-conditional LMD pipeline: figures and held-out scores.

Everything here is computed on held-out (test-split) images the model never trained on:

- the reconstruction figure, one image per class: original | 75 % of its tokens masked | reconstruction;
- the inpainting figure: original | a square removed | the square redone by ``LMDInpaintPipeline``;
- the class-conditional generation figure, one labelled row per class;
- the scores: held-out PSNR against the two trivial floors (the visible-mean fill in pixels and in latents) and
  the projector's ceiling; and, for samples drawn with the pipeline's default call, their conditional accuracy under
  the project's Fashion-MNIST feature classifier (the share it assigns to the class that was asked for), and their
  FID, precision and recall on that classifier's features against the held-out images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import PIL.Image
import PIL.ImageDraw
import torch

from ..evaluation import latent_reference_psnr, pixel_reference_psnr
from ..metrics.feature_classifier import FeatureClassifier
from ..metrics.generation import GenerationScorer
from ..pipelines import LMDInpaintPipeline, LMDPipeline
from ..pipelines.visualization import class_sample_grid, comparison_grid, tile
from ..projector import downsample_factor

FIGURES = {
    "reconstruction": "demo_reconstruction.png",
    "inpainting": "demo_inpainting.png",
    "generation": "demo_generation.png",
}
SCORES_FILE = "demo_scores.json"


def one_per_class(dataset, num_classes: int) -> list[int]:
    """Indices of the first item of each class in ``dataset`` (items with ``"class_labels"``), in class order."""
    found: dict[int, int] = {}
    for index in range(len(dataset)):
        label = int(dataset[index]["class_labels"])
        found.setdefault(label, index)
        if len(found) == num_classes:
            break
    missing = sorted(set(range(num_classes)) - set(found))
    if missing:
        raise ValueError(f"The evaluation set has no image of classes {missing}: raise --max_eval_samples.")
    return [found[label] for label in range(num_classes)]


def with_row_labels(grid: PIL.Image.Image, labels: Sequence[str], row_height: int, gap: int = 2) -> PIL.Image.Image:
    """``grid`` with a white margin on the left naming each row (rows ``row_height`` pixels tall, ``gap`` apart)."""
    draw = PIL.ImageDraw.Draw(grid)
    width = max(int(draw.textlength(label)) for label in labels) + 8
    labelled = PIL.Image.new("RGB", (grid.width + width, grid.height), "white")
    labelled.paste(grid, (width, 0))
    draw = PIL.ImageDraw.Draw(labelled)
    for row, label in enumerate(labels):
        top = row * (row_height + gap) + row_height // 2 - 5
        draw.text((2, top), label, fill="black")
    return labelled


def inpainting_grid(pipe: LMDPipeline, images: torch.Tensor, box: int, scale: int = 2, seed: int = 0):
    """Original | the centred ``box`` x ``box`` square removed (grey) | inpainted, one row per image in ``[0, 1]``."""
    height, width = images.shape[2:]
    mask = torch.zeros(1, 1, height, width)
    top, left = (height - box) // 2, (width - box) // 2
    mask[..., top : top + box, left : left + box] = 1.0
    # The same components, as from_pipe shares them; from_pipe would also re-cast every model to its own dtype,
    # which makes diffusers warn about float32 modules that these models do not have.
    inpaint = LMDInpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(images.shape[0])]
    redone = inpaint(image=images, mask_image=mask, generator=generators, output_type="pt").images.cpu().float()
    removed = torch.where(mask > 0, torch.full_like(images, 0.5), images)
    cells = torch.stack([images, removed, redone], dim=1).flatten(0, 1)
    if scale > 1:
        cells = cells.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return tile(cells, 3)


@torch.no_grad()
def generated_scores(
    pipe: LMDPipeline,
    classifier: FeatureClassifier,
    reference_images: torch.Tensor,
    num_classes: int,
    per_class: int,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> dict:
    """Conditional accuracy, FID, precision and recall (:class:`~diffusers_lmd.metrics.GenerationScorer` on the
    classifier's features, against ``reference_images`` in ``[-1, 1]``) of ``per_class`` samples of every class,
    drawn with the pipeline's default call (sample ``j`` of a class seeded ``seed + 1000 + j``)."""
    images, labels = [], []
    for label in range(num_classes):
        generators = [torch.Generator().manual_seed(seed + 1000 + j) for j in range(per_class)]
        drawn = pipe(class_labels=[label] * per_class, guidance_scale=guidance_scale, generator=generators,
                     output_type="pt").images  # fmt: skip
        images.append(drawn.float() * 2 - 1)
        labels.append(torch.full((per_class,), label))
    scores = GenerationScorer(classifier, reference_images).score(torch.cat(images), torch.cat(labels))
    return {
        "conditional_accuracy": scores["conditional_accuracy"],
        "fid": scores["fid"],
        "precision": scores["precision"],
        "recall": scores["recall"],
        "accuracy_samples": scores["num_samples"],
    }


def write_demo_report(
    pipe: LMDPipeline,
    eval_dataset,
    out_dir: str,
    heldout_psnr: float,
    classifier: FeatureClassifier | None = None,
    guidance_scale: float | None = None,
    samples_per_class: int = 8,
    accuracy_samples_per_class: int = 100,
    max_floor_images: int = 1000,
    seed: int = 0,
) -> dict:
    """Write the three figures and ``demo_scores.json`` into ``out_dir``; return the scores.

    ``heldout_psnr`` is the training run's held-out PSNR (fixed seeded 75 % masks, the MSE head's mean when the
    model has one); the floors and the ceiling are measured here on the same images and masks (the first
    ``max_floor_images`` of ``eval_dataset``), which are also the reference set of the samples' FID. Samples are
    drawn with the pipeline's default call (its default guidance unless ``guidance_scale`` is given).
    """
    pipe.set_progress_bar_config(disable=True)
    config = pipe.transformer.config
    num_classes = config.num_class_embeds or 0
    id2label = pipe.config.get("id2label") or {}
    names = [id2label.get(str(i), str(i)) for i in range(num_classes)]
    count = min(len(eval_dataset), max_floor_images)
    pixels = torch.stack([eval_dataset[i]["pixel_values"] for i in range(count)])
    scores = {"heldout_psnr": heldout_psnr, "num_eval_images": count}
    scores.update(latent_reference_psnr(pipe.vae, pixels, config.patch_size))
    scores.update(pixel_reference_psnr(pixels, downsample_factor(pipe.vae) * config.patch_size))

    shown = pixels[one_per_class(eval_dataset, num_classes)] / 2 + 0.5 if num_classes else pixels[:8] / 2 + 0.5
    generators = [torch.Generator().manual_seed(seed + i) for i in range(shown.shape[0])]
    # The reconstruction figure shows what the PSNR scores: the mean, where the model has an MSE head.
    mean = {"prediction": "mean"} if pipe.transformer.decoder_pred is not None else {}
    figures = {"reconstruction": comparison_grid(pipe, shown, 0.75, generators, scale=2, **mean)}
    figures["inpainting"] = inpainting_grid(pipe, shown[:5], box=pixels.shape[-1] // 2, seed=seed)
    if num_classes:
        guidance = {"guidance_scale": guidance_scale} if guidance_scale is not None else {}
        grid = class_sample_grid(pipe, range(num_classes), samples_per_class, seed=seed, scale=2, **guidance)
        row_height = 2 * pixels.shape[-1]
        figures["generation"] = with_row_labels(grid, names, row_height)
        if classifier is not None:
            scores.update(generated_scores(
                pipe, classifier, pixels, num_classes, accuracy_samples_per_class, guidance_scale, seed
            ))  # fmt: skip
        scores["guidance_scale"] = pipe.guidance_scale
    os.makedirs(out_dir, exist_ok=True)
    for key, image in figures.items():
        image.save(os.path.join(out_dir, FIGURES[key]))
    with open(os.path.join(out_dir, SCORES_FILE), "w") as f:
        json.dump(scores, f, indent=1)
    return scores


def format_scores(scores: dict) -> str:
    """The demo's printed summary: held-out PSNR beside the floors and the ceiling, and the samples' accuracy."""
    lines = [
        f"held-out PSNR: {scores['heldout_psnr']:.2f} dB (test images, 75 % of the tokens masked)",
        f"  floor, masked pixels = the image's visible mean colour:  {scores['mean_pixel']:.2f} dB",
        f"  floor, masked latents = the image's visible mean latent: {scores['mean_latent']:.2f} dB",
        f"  ceiling, the projector alone (nothing masked):           {scores['projector']:.2f} dB",
    ]
    if "conditional_accuracy" in scores:
        lines.append(
            f"conditional accuracy of {scores['accuracy_samples']} generated samples: "
            f"{scores['conditional_accuracy']:.1%} (chance: 10%; guidance {scores['guidance_scale']:g}; the "
            "project's Fashion-MNIST feature classifier)"
        )
        lines.append(
            f"  their FID on that classifier's features against the held-out images: {scores['fid']:.2f}; "
            f"precision {scores['precision']:.2f}, recall {scores['recall']:.2f}"
        )
    return "\n".join(lines)
