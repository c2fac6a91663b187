"""Training: the infrastructure every script shares (flags, checkpoints, logging, optimisers, Hub upload), the
latent cache and the LMD training loop."""

from .args import add_training_args, check_training_args, effective_learning_rate, total_batch_size
from .checkpointing import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_training_state,
    resolve_resume_path,
    save_checkpoint,
)
from .hub import hub_repo_id, push_to_hub, save_model_card
from .latent_cache import CachedLatentDataset, build_latent_cache, cache_fingerprint
from .lmd_args import add_lmd_args, build_lmd_parser, parse_lmd_args
from .lmd_trainer import LMDTrainer, LMDTrainingResult, NonFiniteLossError, train_lmd
from .logging import JsonlLogger, ProgressBar, plot_loss_curve, plot_mask_schedule, read_jsonl
from .optim import build_ema, build_lr_scheduler, build_optimizer, register_ema_hooks

__all__ = [
    "CachedLatentDataset",
    "JsonlLogger",
    "LMDTrainer",
    "LMDTrainingResult",
    "NonFiniteLossError",
    "ProgressBar",
    "add_lmd_args",
    "add_training_args",
    "build_ema",
    "build_latent_cache",
    "build_lmd_parser",
    "build_lr_scheduler",
    "build_optimizer",
    "cache_fingerprint",
    "check_training_args",
    "effective_learning_rate",
    "hub_repo_id",
    "list_checkpoints",
    "parse_lmd_args",
    "load_checkpoint",
    "plot_loss_curve",
    "plot_mask_schedule",
    "prune_checkpoints",
    "push_to_hub",
    "read_jsonl",
    "read_training_state",
    "register_ema_hooks",
    "resolve_resume_path",
    "save_checkpoint",
    "save_model_card",
    "total_batch_size",
    "train_lmd",
]
