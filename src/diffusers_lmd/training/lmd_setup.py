"""Everything ``train_lmd`` builds before its first step: projector, text encoder, model, accelerator and data."""

from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from diffusers import AutoencoderKL, VQModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..models import LMDModel
from ..projector import (
    Projector,
    check_compatible,
    downsample_factor,
    estimate_latent_stats,
    latent_channels,
    set_latent_stats,
)
from .latent_cache import (
    CachedLatentDataset,
    LatentCacheInfo,
    build_latent_cache,
    cache_fingerprint,
    collate_cached,
    data_identity,
    projector_fingerprint,
)
from .lmd_args import MODEL_OVERRIDES

logger = logging.getLogger(__name__)

PROJECTOR_CLASSES = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}


def load_projector(path: str, subfolder: str | None = None) -> Projector:
    """Load a ``VQModel`` or ``AutoencoderKL`` (safetensors only), or raise a ``ValueError`` saying why not.

    An LMD pipeline folder (``model_index.json`` at its root) is accepted too: its ``vae/`` is loaded.
    """
    if subfolder is None and os.path.isfile(os.path.join(path, "model_index.json")):
        subfolder = "vae"
    where = f"{path!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    hint = (
        "Pass a folder saved by VQModel/AutoencoderKL.save_pretrained, e.g. the output of "
        "training/train_projector.py, or assets/demo-projector."
    )
    try:
        config = VQModel.load_config(path, subfolder=subfolder)
    except (OSError, ValueError) as err:
        raise ValueError(f"--projector_path {where} could not be read: {err}. {hint}") from err
    class_name = config.get("_class_name")
    if class_name not in PROJECTOR_CLASSES:
        raise ValueError(f"--projector_path {where} holds a {class_name}, not a VQModel or AutoencoderKL. {hint}")
    try:
        vae = PROJECTOR_CLASSES[class_name].from_pretrained(path, subfolder=subfolder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ValueError(f"--projector_path {where}: its {class_name} weights did not load: {err}. {hint}") from err
    return vae.requires_grad_(False).eval()


def load_text_encoder(path: str) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """A frozen ``CLIPTokenizer`` and ``CLIPTextModel`` (safetensors): from ``tokenizer/`` and ``text_encoder/``
    subfolders when ``path`` has them (a diffusers pipeline folder), else from ``path`` itself."""
    nested = os.path.isdir(os.path.join(path, "text_encoder"))
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer" if nested else "")
        text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder" if nested else "", use_safetensors=True
        )
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"--text_encoder_name_or_path {path!r} did not load as a CLIP tokenizer and text model: {err}. Pass a "
            "folder saved with CLIPTokenizer/CLIPTextModel.save_pretrained (or one with tokenizer/ and "
            "text_encoder/ subfolders), or a Hub id such as openai/clip-vit-base-patch32."
        ) from err
    return tokenizer, text_encoder.requires_grad_(False).eval()


def build_lmd_model(
    args: argparse.Namespace,
    vae: Projector,
    num_class_embeds: int | None = None,
    cross_attention_dim: int | None = None,
) -> LMDModel:
    """The preset, with the flags' overrides, sized for the projector's latents at ``--resolution``; class- and
    text-conditional with ``num_class_embeds`` / ``cross_attention_dim``, with the head of ``--head_type``."""
    factor = downsample_factor(vae)
    if args.resolution % factor:
        raise ValueError(
            f"--resolution {args.resolution} is not divisible by the projector's downsampling factor {factor}."
        )
    overrides = {name: getattr(args, name) for name, _, _ in MODEL_OVERRIDES if getattr(args, name) is not None}
    patch_size = overrides.get("patch_size", 2)
    if (args.resolution // factor) % patch_size:
        raise ValueError(
            f"The {args.resolution // factor}x{args.resolution // factor} latents of --resolution {args.resolution} "
            f"do not split into {patch_size}x{patch_size} patches: change --resolution or --patch_size."
        )
    generation = dict(
        head_type=getattr(args, "head_type", "mse"), mse_loss_weight=getattr(args, "mse_loss_weight", 0.0)
    )
    if num_class_embeds is not None:
        generation.update(num_class_embeds=num_class_embeds, class_dropout_prob=args.conditioning_dropout_prob)
    if cross_attention_dim is not None:
        generation.update(cross_attention_dim=cross_attention_dim, encoder_cross_attention=args.encoder_cross_attention)
    model = LMDModel.from_preset(
        args.preset, sample_size=args.resolution // factor, in_channels=latent_channels(vae), **overrides, **generation
    )
    check_compatible(vae, model, args.resolution)
    return model


def has_accelerator() -> bool:
    """Whether torch sees a GPU or other accelerator."""
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def build_accelerator(args: argparse.Namespace) -> Accelerator:
    """An ``Accelerator`` with the run's precision, accumulation, tracker, compile and seedable data order."""
    project = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
    )
    accelerator = Accelerator(
        cpu=not has_accelerator(),  # lets `torchrun --nproc_per_node N` run N gloo processes on a CPU-only host
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=project,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        dynamo_backend="inductor" if args.compile else None,
    )
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    return accelerator


def place_projector(vae: Projector, accelerator: Accelerator) -> Projector:
    """Move the frozen projector to the device, in the mixed-precision dtype as in diffusers' example scripts."""
    dtype = weight_dtype(accelerator)
    return vae.to(accelerator.device) if dtype == vae.dtype else vae.to(accelerator.device, dtype=dtype)


def weight_dtype(accelerator: Accelerator) -> torch.dtype:
    """The dtype the frozen projector runs in: the mixed-precision dtype, as in diffusers' example scripts."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def maybe_estimate_latent_stats(args: argparse.Namespace, vae: Projector, dataset, max_batches: int = 32) -> None:
    """With ``--estimate_latent_stats``, measure and store the latent scale and shift on training images."""
    if not args.estimate_latent_stats:
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.encode_batch_size, shuffle=False)
    scale, shift = estimate_latent_stats(vae, loader, max_batches=max_batches)
    set_latent_stats(vae, scale, shift)
    logger.info("Estimated latent statistics: scaling_factor=%.5f shift_factor=%.5f", scale, shift)


def build_train_dataloader(
    args: argparse.Namespace, accelerator: Accelerator, vae: Projector, train_dataset
) -> tuple[torch.utils.data.DataLoader, LatentCacheInfo | None]:
    """A shuffled loader of cached latents (``--cache_latents``) or of pixel batches to encode each step."""
    cache = None
    dataset, collate = train_dataset, None
    if args.cache_latents:
        key = cache_fingerprint(projector_fingerprint(vae), data_identity(args, train_dataset), args.random_flip)
        cache = build_latent_cache(
            accelerator,
            vae,
            train_dataset,
            key,
            cache_dir=args.latent_cache_dir,
            batch_size=args.encode_batch_size,
            flips=args.random_flip,
            num_workers=args.dataloader_num_workers,
        )
        dataset, collate = CachedLatentDataset(cache.path), collate_cached
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        num_workers=0 if args.cache_latents else args.dataloader_num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),
    )
    return loader, cache
