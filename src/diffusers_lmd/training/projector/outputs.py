"""What a projector run measures and writes: held-out PSNR (and codebook usage), reconstruction grids, and the
saved folder (``from_pretrained``-ready, with its latent statistics, metrics, reconstructions and card)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers import VQModel
from PIL import Image

from ...metrics import psnr
from ...projector import estimate_latent_stats, set_latent_stats
from ..ema import copy_with_ema_weights
from ..hub import HubUploader, save_model_card
from ..logging import log_images, plot_loss_curve, plot_or_warn, read_jsonl

logger = get_logger(__name__)  # rank-aware: the main process speaks

METRICS_FILE = "projector_metrics.json"


@torch.no_grad()
def evaluate_projector(vae, images: Iterable, max_batches: int | None = None) -> dict[str, float]:
    """Held-out reconstruction quality: mean per-image PSNR (dB, images in ``[-1, 1]`` i.e. PSNR on ``[0, 1]``),
    and for a ``VQModel`` the share of the codebook the held-out images use."""
    was_training = vae.training
    vae.eval()
    scores, codes = [], set()
    for i, batch in enumerate(images):
        if max_batches is not None and i >= max_batches:
            break
        x = (batch["pixel_values"] if isinstance(batch, dict) else batch).to(device=vae.device, dtype=vae.dtype)
        if isinstance(vae, VQModel):
            latents = vae.encode(x).latents
            codes.update(vae.quantize(latents)[2][2].flatten().tolist())
            reconstruction = vae.decode(latents).sample
        else:
            reconstruction = vae(x, sample_posterior=False).sample
        scores.append(psnr(reconstruction.float().clamp(-1, 1), x.float(), data_range=2.0))
    vae.train(was_training)
    if not scores:
        raise ValueError("evaluate_projector got no images: the evaluation set is empty.")
    result = {"eval_psnr": torch.cat(scores).mean().item()}
    if isinstance(vae, VQModel):
        result["codebook_usage"] = len(codes) / vae.config.num_vq_embeddings
    return result


def reconstruction_grid(vae, images: torch.Tensor, max_images: int = 8) -> np.ndarray:
    """Originals (top row) over reconstructions (bottom row), as an ``H x W x 3`` uint8 image."""
    with torch.no_grad():
        x = images[:max_images].to(device=vae.device, dtype=vae.dtype)
        reconstruction = vae(x).sample.clamp(-1, 1)
    rows = [torch.cat(list(t.float().cpu()), dim=-1) for t in (x, reconstruction)]
    grid = torch.cat(rows, dim=-2).add(1).mul(127.5).round().clamp(0, 255).byte()
    return grid.permute(1, 2, 0).numpy()


def validate(accelerator: Accelerator, vae, eval_loader, step: int) -> dict:
    """Held-out metrics on the main process (the eval set is small); ``{}`` elsewhere."""
    if not accelerator.is_main_process:
        return {}
    metrics = evaluate_projector(vae, eval_loader)
    if accelerator.trackers:
        log_images(
            accelerator, "reconstructions", reconstruction_grid(vae, next(iter(eval_loader))["pixel_values"]), step
        )
    logger.info("step %d: held-out PSNR %.2f dB", step, metrics["eval_psnr"])
    return metrics


def finish_run(args, vae, eval_loader, stats_loader, global_step: int, train_seconds: float, hub) -> dict:
    """Save the projector folder (:func:`save_folder`) with the loss curve, push it if asked, report the PSNR."""
    records = read_jsonl(os.path.join(args.output_dir, "train_log.jsonl"))
    if records:
        path = os.path.join(args.output_dir, "loss_curve.png")
        plot_or_warn(plot_loss_curve, records, path, title="Projector training loss")
    result = save_folder(args, vae, eval_loader, stats_loader, global_step, train_seconds, args.output_dir)
    if hub is not None:
        hub.push_final()
    print(f"held-out PSNR: {result['eval_psnr']:.2f} dB (scaling_factor {result['scaling_factor']:.4f})")
    return result


def push_checkpoint(hub: HubUploader, args, vae, ema, loaders, step: int, seconds: float) -> None:
    """``--hub_strategy every_save``: upload the projector as it is now (EMA weights with ``--use_ema``, its own
    latent statistics), saved from a copy so that the model being trained is left untouched."""

    def write(folder: str) -> None:
        save_folder(args, copy_with_ema_weights(vae, ema), *loaders, step, seconds, folder)

    hub.push_checkpoint(step, write)


def save_folder(args, vae, eval_loader, stats_loader, global_step: int, train_seconds: float, folder: str) -> dict:
    """Estimate and store the latent statistics, evaluate, and save the projector, metrics, reconstructions and
    card to ``folder`` (the output folder at the end, a staging folder for a checkpoint push)."""
    vae.eval()
    scale, shift = estimate_latent_stats(vae, stats_loader, max_batches=args.stats_max_batches)
    set_latent_stats(vae, scale, shift)
    metrics = evaluate_projector(vae, eval_loader)
    vae.save_pretrained(folder, safe_serialization=True)
    result = {
        "projector_class": type(vae).__name__,
        "global_step": global_step,
        "train_seconds": round(train_seconds, 1),
        "eval_psnr": metrics["eval_psnr"],
        "scaling_factor": scale,
        "shift_factor": shift,
        "num_parameters": sum(p.numel() for p in vae.parameters()),
    }
    if "codebook_usage" in metrics:
        result["codebook_usage"] = metrics["codebook_usage"]
    with open(os.path.join(folder, METRICS_FILE), "w") as f:
        json.dump(result, f, indent=2)
    grid = reconstruction_grid(vae, next(iter(eval_loader))["pixel_values"])
    Image.fromarray(grid).save(os.path.join(folder, "reconstructions.png"))
    _write_card(args, vae, result, folder)
    return result


def _write_card(args, vae, result: dict, folder: str) -> None:
    cls = type(vae).__name__
    save_model_card(
        folder,
        title=f"diffusers-lmd projector ({cls})",
        description=f"A {cls} trained with `training/train_projector.py` as the frozen projector of Latent Masking "
        "Diffusion (arXiv 2312.07971). Its config stores the latent `scaling_factor` estimated on the training data.",
        usage=f'from diffusers import {cls}\n\nvae = {cls}.from_pretrained("<this folder or repo>")',
        args=args,
        metrics={"held-out PSNR (dB)": result["eval_psnr"], "scaling_factor": result["scaling_factor"]},
        images=[("Held-out reconstructions (top: original)", "reconstructions.png"), ("Loss", "loss_curve.png")],
        tags=["autoencoder", "lmd-projector"],
    )
