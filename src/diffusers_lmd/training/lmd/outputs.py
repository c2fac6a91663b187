"""What an LMD run returns and writes: its :class:`LMDTrainingResult`, the pipeline, plots, reconstructions, samples
and card a finished run leaves in ``--output_dir``, and the model of every ``checkpoint-N/``, saved as
``transformer/`` so ``from_pretrained`` reads it.

As diffusers' example scripts do with ``unet/``, Accelerate's save-state hook writes the ``LMDModel`` with
``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) and takes it out of the weights
Accelerate saves itself, so it is stored once; the load-state hook restores it from there. So
``LMDModel.from_pretrained("out/checkpoint-500/transformer")`` loads a checkpoint's model, and with ``--use_ema``
``checkpoint-500/ema`` its EMA. A checkpoint written before these hooks (``model.safetensors``) still resumes.
"""

from __future__ import annotations

import argparse
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image

from ...evaluation import EVAL_MASK_RATIO, ReconstructionMetrics, reconstruction_grid
from ...models import LMDModel
from ...pipelines import LMDPipeline
from ...pipelines.hub_utils import card_pipeline_tag, card_tags, pipeline_usage
from ...pipelines.visualization import class_sample_grid
from ...projector import Projector
from ...schedulers import LMDMaskScheduler
from ..hub import HubUploader, hub_repo_id, save_model_card
from ..logging import plot_loss_curve, plot_mask_schedule, plot_or_warn, read_jsonl

LOG_FILE = "train_log.jsonl"
GRID_FILE = "reconstructions.png"
SAMPLES_FILE = "samples.png"
SAMPLES_PER_CLASS = 8


@dataclass
class LMDTrainingResult:
    """What :func:`~diffusers_lmd.training.lmd.trainer.train_lmd` did.

    Args:
        output_dir: the folder holding the saved pipeline.
        global_step: optimiser steps completed (the total, including steps before a resume).
        final_loss: the loss of the last step.
        eval: the held-out evaluation of the saved model.
        train_seconds: wall-clock seconds of this process's training loop.
        epoch_seconds: wall-clock seconds of each complete epoch run in this process.
        epoch_cpu_seconds: CPU seconds this process spent on each of those epochs (less sensitive to other load).
        cache_seconds / cache_reused: time spent building or opening the latent cache, and whether it existed.
    """

    output_dir: str
    global_step: int
    final_loss: float | None
    eval: ReconstructionMetrics | None
    train_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_cpu_seconds: list[float] = field(default_factory=list)
    cache_seconds: float | None = None
    cache_reused: bool | None = None


def _float32(module: torch.nn.Module | None) -> torch.nn.Module | None:
    """``module`` in float32 for saving: a float32 copy when it runs in another dtype, so the run's module is untouched
    (a checkpoint push happens mid-run)."""
    if module is None or module.dtype == torch.float32:
        return module
    return copy.deepcopy(module).to(torch.float32)


def save_pipeline(
    output_dir: str,
    vae: Projector,
    model: LMDModel,
    mask_scheduler: LMDMaskScheduler,
    tokenizer=None,
    text_encoder: torch.nn.Module | None = None,
    id2label: dict[int, str] | None = None,
    sampling_defaults: dict | None = None,
) -> LMDPipeline:
    """Save an ``LMDPipeline`` (``model_index.json`` at the root, float32 safetensors; its ``save_pretrained`` puts the
    Hub pipeline file beside it); a text-conditional run's tokenizer and text encoder, and a class-conditional run's
    ``id2label``, and the sampling defaults chosen for it, go with it."""
    pipeline = LMDPipeline(
        vae=_float32(vae),
        transformer=_float32(model),
        scheduler=mask_scheduler,
        tokenizer=tokenizer,
        text_encoder=_float32(text_encoder),
        id2label=id2label,
        sampling_defaults=sampling_defaults,
    )
    pipeline.save_pretrained(output_dir)
    return pipeline


def save_grid(grid: np.ndarray, path: str) -> str:
    Image.fromarray(grid).save(path)
    return path


def write_plots(output_dir: str) -> list[str]:
    """``loss_curve.png`` and ``mask_schedule.png`` from ``train_log.jsonl``; each skipped with a warning without
    matplotlib (the model is saved by then), so the written paths are returned."""
    records = read_jsonl(os.path.join(output_dir, LOG_FILE))
    plots = [
        plot_or_warn(plot_loss_curve, records, os.path.join(output_dir, "loss_curve.png")),
        plot_or_warn(plot_mask_schedule, records, os.path.join(output_dir, "mask_schedule.png")),
    ]
    return [path for path in plots if path is not None]


def write_model_card(
    output_dir: str, args: argparse.Namespace, metrics: dict[str, float], repo_id: str | None = None
) -> str:
    """The model card of an LMD pipeline folder: usage, metrics, reconstructions, curves and arguments."""
    repo = repo_id or hub_repo_id(args)
    usage = pipeline_usage(repo, bool(args.label_column), bool(args.caption_column))
    schedule = (
        f"the `{args.mask_schedule}` mask-ratio schedule rising from {args.mask_ratio_min} to {args.mask_ratio_max}"
    )
    if args.mask_schedule == "truncnorm":
        schedule = (
            f"mask ratios drawn each step in [{args.mask_ratio_min}, {args.mask_ratio_max}] (MAR's truncated normal)"
        )
    description = (
        "An LMD (Latent Masking Diffusion, arXiv 2312.07971) model: a ViT masked autoencoder over the latents of a "
        f"frozen projector, trained with {schedule} using diffusers-lmd's `training/train_lmd.py`. Held-out "
        f"PSNR is measured in pixel space on whole images with a fixed, seeded {EVAL_MASK_RATIO:.0%} token mask."
    )
    conditioning = [
        name for flag, name in (("label_column", "class"), ("caption_column", "text")) if getattr(args, flag)
    ]
    sampled = {"diffusion": " and patches sampled by the diffusion head", "categorical": " and the categorical head's "
               "most likely codes"}.get(args.head_type, "")  # fmt: skip
    if conditioning or sampled:
        description += (
            f" Conditioning: {' and '.join(conditioning) or 'none'} (dropout {args.conditioning_dropout_prob} for "
            f"classifier-free guidance); head: {args.head_type}. Held-out PSNR uses the unconditional input"
            + f"{sampled}."
        )
    images = [
        ("Held-out reconstructions (originals, masked inputs, reconstructions)", GRID_FILE),
        ("Training loss", "loss_curve.png"),
        ("Mask-ratio schedule", "mask_schedule.png"),
    ]
    if os.path.isfile(os.path.join(output_dir, SAMPLES_FILE)):
        images.insert(1, ("Class-conditional samples, one row per class", SAMPLES_FILE))
    return save_model_card(
        output_dir,
        title=f"LMD: {Path(os.path.abspath(output_dir)).name}",
        description=description,
        usage=usage,
        args=args,
        metrics=metrics,
        images=images,
        tags=card_tags(bool(args.label_column)),
        pipeline_tag=card_pipeline_tag(bool(args.label_column), bool(args.caption_column), args.head_type != "mse"),
    )


def write_checkpoint_folder(
    folder: str,
    args: argparse.Namespace,
    vae: Projector,
    model: LMDModel,
    mask_scheduler: LMDMaskScheduler,
    metrics: dict[str, float],
    pipeline_extras: dict | None = None,
    repo_id: str | None = None,
) -> None:
    """The pipeline and its model card as they are mid-run: what ``--hub_strategy every_save`` uploads."""
    save_pipeline(folder, vae, model, mask_scheduler, **(pipeline_extras or {}))
    write_model_card(folder, args, metrics, repo_id)


def finish_run(
    args: argparse.Namespace,
    vae: Projector,
    model: LMDModel,
    mask_scheduler: LMDMaskScheduler,
    eval_dataset,
    evaluation: ReconstructionMetrics | None,
    metrics: dict[str, float],
    evaluated: torch.nn.Module | None = None,
    pipeline_extras: dict | None = None,
    hub: HubUploader | None = None,
) -> None:
    """Main process only: save the pipeline, grid, class samples, plots and card, then upload it through ``hub``.

    ``evaluated`` is the model as evaluation calls it (see :mod:`~diffusers_lmd.training.lmd.evaluation`);
    ``pipeline_extras`` the pipeline's ``tokenizer``, ``text_encoder`` and ``id2label``; ``hub`` the run's
    :class:`~diffusers_lmd.training.hub.HubUploader` (``None`` without ``--push_to_hub``).
    """
    out = args.output_dir
    pipeline = save_pipeline(out, vae, model, mask_scheduler, **(pipeline_extras or {}))
    if eval_dataset is not None and len(eval_dataset):
        grid = reconstruction_grid(evaluated or model, vae, eval_dataset, num_images=min(8, len(eval_dataset)))
        save_grid(grid, f"{out}/{GRID_FILE}")
    if model.config.num_class_embeds is not None:
        pipeline.set_progress_bar_config(disable=True)
        grid = class_sample_grid(pipeline, range(model.config.num_class_embeds), SAMPLES_PER_CLASS)
        grid.save(os.path.join(out, SAMPLES_FILE))
    write_plots(out)
    if evaluation is not None:
        metrics = {f"held-out PSNR (dB, mask {evaluation.mask_ratio})": evaluation.psnr, **metrics}
    write_model_card(out, args, metrics, hub.repo_id if hub is not None else None)
    if hub is not None:
        hub.push_final()


TRANSFORMER_SUBFOLDER = "transformer"


def register_transformer_hooks(accelerator: Accelerator, subfolder: str = TRANSFORMER_SUBFOLDER) -> None:
    """Register save/load state hooks that keep the prepared ``LMDModel`` in ``{checkpoint}/{subfolder}``."""

    def lmd_models(models: list) -> list[int]:
        return [i for i, model in enumerate(models) if isinstance(accelerator.unwrap_model(model), LMDModel)]

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        for i in reversed(lmd_models(models)):
            if accelerator.is_main_process:
                model = accelerator.unwrap_model(models[i])
                model.save_pretrained(os.path.join(output_dir, subfolder), safe_serialization=True)
            if weights:  # empty under DeepSpeed, which saves its own
                weights.pop(i)  # saved above: Accelerate must not write model.safetensors too

    def load_hook(models: list, input_dir: str) -> None:
        folder = os.path.join(input_dir, subfolder)
        if not os.path.isdir(folder):
            return  # an older checkpoint: Accelerate loads its model.safetensors itself
        for i in reversed(lmd_models(models)):
            model = accelerator.unwrap_model(models.pop(i))
            loaded = LMDModel.from_pretrained(folder, use_safetensors=True)
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def final_weights(model: torch.nn.Module, ema) -> torch.nn.Module:
    """The model to save: a copy holding the EMA weights when ``--use_ema``, else the trained model."""
    if ema is None:
        return model
    final = copy.deepcopy(model)
    ema.copy_to(final.parameters())
    return final
