"""Training: the flags of every script (``args/``), the infrastructure the engines share (checkpoints, EMA,
optimisers, Hub upload, logging, the latent and text caches, pretrained loading, the Accelerator), and one engine
per task: ``lmd/`` (:class:`LMDTrainer`) and ``projector/`` (the projector's VQGAN-style training)."""

from .args import (
    add_lmd_args,
    add_pretrained_args,
    add_training_args,
    build_lmd_parser,
    check_training_args,
    effective_learning_rate,
    parse_lmd_args,
    total_batch_size,
)
from .checkpointing import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_training_state,
    resolve_resume_path,
    save_checkpoint,
)
from .ema import copy_with_ema_weights, ema_weights
from .hub import HubUploader, hub_repo_id, push_to_hub, save_model_card
from .latent_cache import CachedLatentDataset, build_latent_cache, cache_fingerprint
from .lmd import LMDTrainer, LMDTrainingResult, load_projector, projector_dtype, register_transformer_hooks, train_lmd
from .logging import (
    JsonlLogger,
    ProgressBar,
    plot_loss_curve,
    plot_mask_schedule,
    plot_or_warn,
    read_jsonl,
    setup_logging,
)
from .optim import build_ema, build_lr_scheduler, build_optimizer, register_ema_hooks
from .pretrained import PretrainedSource, load_pretrained_projector, resolve_pretrained
from .runtime import NonFiniteLossError, build_accelerator

__all__ = [
    "CachedLatentDataset",
    "HubUploader",
    "JsonlLogger",
    "LMDTrainer",
    "LMDTrainingResult",
    "NonFiniteLossError",
    "PretrainedSource",
    "ProgressBar",
    "add_lmd_args",
    "add_pretrained_args",
    "add_training_args",
    "build_accelerator",
    "build_ema",
    "build_latent_cache",
    "build_lmd_parser",
    "build_lr_scheduler",
    "build_optimizer",
    "cache_fingerprint",
    "check_training_args",
    "copy_with_ema_weights",
    "effective_learning_rate",
    "ema_weights",
    "hub_repo_id",
    "list_checkpoints",
    "load_checkpoint",
    "load_pretrained_projector",
    "load_projector",
    "parse_lmd_args",
    "plot_loss_curve",
    "plot_mask_schedule",
    "plot_or_warn",
    "projector_dtype",
    "prune_checkpoints",
    "push_to_hub",
    "read_jsonl",
    "read_training_state",
    "register_ema_hooks",
    "register_transformer_hooks",
    "resolve_pretrained",
    "resolve_resume_path",
    "save_checkpoint",
    "save_model_card",
    "setup_logging",
    "total_batch_size",
    "train_lmd",
]
