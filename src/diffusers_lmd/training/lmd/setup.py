"""Everything ``train_lmd`` builds before its first step (projector, text encoder, model and data), and the
per-step pieces of its loop: the step's generator, statistics across ranks and the stop on a NaN loss."""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list
from transformers import CLIPTextModel, CLIPTokenizer

from ...data import DataConfig
from ...models import LMDModel
from ...projector import (
    Projector,
    check_compatible,
    downsample_factor,
    estimate_latent_stats,
    latent_channels,
    set_latent_stats,
    vq_codebook,
)
from ..checkpointing import list_checkpoints
from ..latent_cache import (
    CachedLatentDataset,
    LatentCacheInfo,
    build_latent_cache,
    cache_fingerprint,
    collate_cached,
    data_identity,
    projector_fingerprint,
)
from ..pretrained import load_pretrained_projector, resolve_pretrained
from ..runtime import NonFiniteLossError, weight_dtype

logger = get_logger(__name__)  # rank-aware: the main process speaks


def load_projector(
    path: str,
    subfolder: str | None = None,
    *,
    revision: str | None = None,
    variant: str | None = None,
    cache_dir: str | None = None,
    flag: str = "--projector_path",
) -> Projector:
    """A frozen ``VQModel`` or ``AutoencoderKL`` (safetensors only) from a local folder or Hub repository, or a
    ``ValueError`` naming ``flag`` and saying why not.

    A pipeline (``model_index.json`` at its root, locally or on the Hub) gives its ``vae``; see
    :func:`~diffusers_lmd.training.pretrained.load_pretrained_projector`.
    """
    source = resolve_pretrained(
        path, subfolder=subfolder, revision=revision, variant=variant, cache_dir=cache_dir, flag=flag
    )
    return load_pretrained_projector(source, flag=flag, subfolder_flag="--projector_subfolder")


def load_text_encoder(path: str, cache_dir: str | None = None) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """A frozen ``CLIPTokenizer`` and ``CLIPTextModel`` (safetensors): from ``tokenizer/`` and ``text_encoder/``
    subfolders when ``path`` has them (a diffusers pipeline folder), else from ``path`` itself."""
    nested = os.path.isdir(os.path.join(path, "text_encoder"))
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer" if nested else "", cache_dir=cache_dir)
        text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder" if nested else "", use_safetensors=True, cache_dir=cache_dir
        )
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"--text_encoder_name_or_path {path!r} did not load as a CLIP tokenizer and text model: {err}. Pass a "
            "folder saved with CLIPTokenizer/CLIPTextModel.save_pretrained (or one with tokenizer/ and "
            "text_encoder/ subfolders), or a Hub id such as openai/clip-vit-base-patch32."
        ) from err
    return tokenizer, text_encoder.requires_grad_(False).eval()


def build_lmd_model(
    vae: Projector,
    resolution: int,
    preset: str = "small",
    overrides: dict | None = None,
    *,
    head_type: str = "mse",
    mse_loss_weight: float = 0.0,
    num_class_embeds: int | None = None,
    class_dropout_prob: float = 0.1,
    cross_attention_dim: int | None = None,
    encoder_cross_attention: bool = True,
) -> LMDModel:
    """The ``preset`` with the architecture ``overrides`` (e.g. ``{"hidden_size": 128}``), sized for the projector's
    latents of ``resolution``-pixel images, with the head of ``head_type``; class-conditional with
    ``num_class_embeds`` (labels dropped with ``class_dropout_prob``) and text-conditional with
    ``cross_attention_dim``. A categorical head is sized by the ``VQModel``'s codes and given its codebook
    (:func:`set_projector_codebook`). Errors name the flags of ``train_lmd.py``."""
    overrides = overrides or {}
    factor = downsample_factor(vae)
    if resolution % factor:
        raise ValueError(f"--resolution {resolution} is not divisible by the projector's downsampling factor {factor}.")
    patch_size = overrides.get("patch_size", 2)
    if (resolution // factor) % patch_size:
        raise ValueError(
            f"The {resolution // factor}x{resolution // factor} latents of --resolution {resolution} "
            f"do not split into {patch_size}x{patch_size} patches: change --resolution or --patch_size."
        )
    generation = dict(head_type=head_type, mse_loss_weight=mse_loss_weight)
    if head_type == "categorical":
        projector_codebook(vae)  # a VQModel, or the error before any work
        generation["codebook_size"] = vae.config.num_vq_embeddings
    if num_class_embeds is not None:
        generation.update(num_class_embeds=num_class_embeds, class_dropout_prob=class_dropout_prob)
    if cross_attention_dim is not None:
        generation.update(cross_attention_dim=cross_attention_dim, encoder_cross_attention=encoder_cross_attention)
    model = LMDModel.from_preset(
        preset, sample_size=resolution // factor, in_channels=latent_channels(vae), **overrides, **generation
    )
    check_compatible(vae, model, resolution)
    set_projector_codebook(model, vae)
    return model


def projector_codebook(vae: Projector) -> torch.Tensor:
    """The ``VQModel``'s codebook in the normalised latent space, or a ``ValueError`` naming the flags."""
    try:
        return vq_codebook(vae)
    except ValueError as err:
        raise ValueError(
            f"--head_type categorical predicts a VQModel's codes, but --projector_path is a {type(vae).__name__}: "
            "pass a VQModel projector, or use --head_type mse or diffusion."
        ) from err


def set_projector_codebook(model: LMDModel, vae: Projector) -> None:
    """Give a categorical ``model`` the projector's codebook (again after the latent statistics change: the codebook
    lives in the normalised latent space); other heads have none."""
    if model.config.head_type == "categorical":
        model.set_codebook(projector_codebook(vae))


def adapt_pretrained_model(
    model: LMDModel,
    vae: Projector,
    resolution: int,
    *,
    num_class_embeds: int | None = None,
    class_dropout_prob: float = 0.1,
    cross_attention_dim: int | None = None,
) -> LMDModel:
    """``model``'s weights, conditioned as this run's data asks: the class embeddings are made anew (initialised as a
    new model's) when the number of classes differs, everything else is kept. Errors name ``train_lmd.py``'s flags."""
    try:
        check_compatible(vae, model, resolution)
    except ValueError as err:
        raise ValueError(f"--projector_path does not fit --pretrained_model_name_or_path's transformer: {err}") from err
    latent_size = resolution // downsample_factor(vae)
    if model.config.sample_size not in (latent_size, [latent_size, latent_size], (latent_size, latent_size)):
        raise ValueError(
            f"--resolution {resolution} gives {latent_size}x{latent_size} latents, but the pretrained transformer was "
            f"built for sample_size={model.config.sample_size}: pass the --resolution it was trained at."
        )
    if cross_attention_dim != model.config.cross_attention_dim:
        raise ValueError(
            f"The pretrained transformer's cross_attention_dim is {model.config.cross_attention_dim}, this run's text "
            f"encoder gives {cross_attention_dim}: use the same --text_encoder_name_or_path (or none) as its training."
        )
    conditioning = dict(num_class_embeds=num_class_embeds, class_dropout_prob=class_dropout_prob)
    if all(model.config[name] == value for name, value in conditioning.items()):
        return model
    adapted = LMDModel.from_config({**model.config, **conditioning})
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("class_embedding.")}
    missing, unexpected = adapted.load_state_dict(kept, strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise ValueError(f"The pretrained transformer's weights do not fit its own config: {missing + unexpected}.")
    if num_class_embeds is not None and num_class_embeds == model.config.num_class_embeds:
        adapted.class_embedding.load_state_dict(model.class_embedding.state_dict())
    elif num_class_embeds is not None:
        logger.info("Class embeddings made anew: %d classes (the pretrained model had %s)", num_class_embeds,
                    model.config.num_class_embeds)  # fmt: skip
    return adapted


def projector_dtype(upcast: bool | None, vae: Projector, accelerator: Accelerator) -> torch.dtype:
    """fp32 when ``upcast`` (``--upcast_projector``), or, when it is ``None``, when the projector's config sets
    ``force_upcast`` (a VAE that overflows in half precision, as Stable Diffusion's does in fp16); else
    :func:`~diffusers_lmd.training.runtime.weight_dtype`."""
    if upcast is None:
        upcast = bool(getattr(vae.config, "force_upcast", False))
    return torch.float32 if upcast else weight_dtype(accelerator)


def place_projector(vae: Projector, accelerator: Accelerator, dtype: torch.dtype | None = None) -> Projector:
    """Move the frozen projector to the device, in ``dtype`` (default :func:`weight_dtype`)."""
    dtype = dtype or weight_dtype(accelerator)
    vae = vae.to(accelerator.device) if dtype == vae.dtype else vae.to(accelerator.device, dtype=dtype)
    logger.info("Projector: %s in %s on %s", type(vae).__name__, str(dtype).removeprefix("torch."), vae.device)
    return vae


def set_estimated_latent_stats(
    vae: Projector,
    dataset,
    accelerator: Accelerator,
    batch_size: int = 64,
    num_workers: int = 0,
    max_batches: int = 32,
) -> None:
    """Measure the latent scale and shift on the first ``max_batches`` batches of training images and store them in
    the projector's config (``--estimate_latent_stats``).

    Call after :func:`place_projector`, so the projector encodes on the device. The main process encodes and the others
    receive its two numbers: every rank then holds bit-identical statistics, and with them the same latent-cache key.
    """
    stats = [None, None]
    if accelerator.is_main_process:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        stats = list(estimate_latent_stats(vae, loader, max_batches=max_batches))
    if accelerator.num_processes > 1:
        stats = broadcast_object_list(stats, from_process=0)
    set_latent_stats(vae, *stats)
    logger.info("Estimated latent statistics: scaling_factor=%.5f shift_factor=%.5f", *stats)


def build_train_dataloader(
    accelerator: Accelerator,
    vae: Projector,
    train_dataset,
    data: DataConfig,
    *,
    batch_size: int,
    seed: int = 0,
    cache_latents: bool = True,
    cache_dir: str | None = None,
    encode_batch_size: int = 64,
) -> tuple[torch.utils.data.DataLoader, LatentCacheInfo | None]:
    """A loader shuffled from ``seed``, of latents cached in ``cache_dir`` (``cache_latents``, encoded
    ``encode_batch_size`` images at a time) or of pixel batches to encode each step, with ``data``'s
    ``dataloader_num_workers`` worker processes either way (cached batches are read a batch per call)."""
    cache = None
    dataset, collate = train_dataset, None
    if cache_latents:
        if hasattr(train_dataset, "set_epoch"):
            train_dataset.set_epoch(0)  # the views the cache holds: epoch 0's crops
        if not getattr(train_dataset, "center_crop", True) and not data.pad_to_resolution:
            logger.warning(
                "The latent cache holds one view per image: each image keeps the random crop encoded for the cache, "
                "the same every epoch (flips stay random). For a new crop each epoch use --no-cache_latents (every "
                "step then encodes its batch); for centre crops, --center_crop."
            )
        key = cache_fingerprint(projector_fingerprint(vae), data_identity(data, train_dataset), data.random_flip)
        cache = build_latent_cache(
            accelerator,
            vae,
            train_dataset,
            key,
            cache_dir=cache_dir,
            batch_size=encode_batch_size,
            flips=data.random_flip,
            num_workers=data.dataloader_num_workers,
        )
        dataset, collate = CachedLatentDataset(cache.path), collate_cached
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=data.dataloader_num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, cache


def step_generator(seed: int, step: int, micro_step: int, rank: int) -> torch.Generator:
    """A CPU generator for one micro-batch's flips and mask, the same on a resumed run."""
    state = np.random.SeedSequence([seed, step, micro_step, rank]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def tracker_config(args: argparse.Namespace) -> dict:
    """Flags as tracker hyper-parameters (TensorBoard takes numbers, strings and booleans only)."""
    return {
        k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items() if k != "hub_token"
    }


def gather_step_stats(accelerator, loss: torch.Tensor, mask_ratio: float) -> tuple[float, list[float]]:
    """The loss averaged over ranks, and every rank's mask ratio (one collective for both)."""
    if accelerator.num_processes == 1:
        return loss.detach().item(), [mask_ratio]
    local = torch.stack([loss.detach().double(), torch.tensor(mask_ratio, dtype=torch.float64, device=loss.device)])
    stats = accelerator.gather(local[None]).reshape(-1, 2).cpu()
    return stats[:, 0].mean().item(), stats[:, 1].tolist()


def check_finite_loss(
    loss: float, step: int, mask_ratio: float, lr: float, output_dir: str, latents: torch.Tensor | None = None
) -> None:
    """Raise :class:`NonFiniteLossError` for a NaN or infinite ``loss``, saying what to do.

    Only then are this rank's ``latents`` read back (the model does not check them on the training step, to spare
    the host-device sync): NaN latents point at the projector rather than the optimisation.
    """
    if math.isfinite(loss):
        return
    checkpoints = list_checkpoints(output_dir)
    last = f"the last good checkpoint, {checkpoints[-1][1]}, is intact" if checkpoints else "no checkpoint was saved"
    where = f"The training loss became {loss} at step {step + 1} (mask ratio {mask_ratio:.3f}, lr {lr:.3g})"
    if latents is not None and not torch.isfinite(latents).all():
        raise NonFiniteLossError(
            f"{where} because this batch's latents hold NaN or infinite values ({latents.dtype}): the projector "
            f"overflows or its scaling_factor is wrong. The run stopped before updating the weights and {last}. "
            "Keep the projector in fp32 (--upcast_projector) or use --mixed_precision bf16/no, check its "
            "scaling_factor (--estimate_latent_stats), then resume with --resume_from_checkpoint latest."
        )
    raise NonFiniteLossError(
        f"{where}; the run stopped before updating the weights and {last}. Lower --learning_rate, raise "
        "--lr_warmup_steps, set --max_grad_norm, or use --mixed_precision bf16/no, then resume with "
        "--resume_from_checkpoint latest."
    )
