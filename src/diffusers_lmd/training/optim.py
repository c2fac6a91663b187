"""Optimiser, learning-rate schedule and EMA construction from the shared training flags."""

from __future__ import annotations

import argparse
import os

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn

# Adan's paper defaults (beta1, beta2, beta3) = (0.98, 0.92, 0.99); adan-pytorch takes one minus each.
ADAN_BETAS = (0.02, 0.08, 0.01)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups as in MAE: decay on matrices, none on biases, norms and 1-D tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name.endswith("_token"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, args: argparse.Namespace, learning_rate: float) -> torch.optim.Optimizer:
    """``--optimizer adamw`` (fused on CUDA) or ``adan`` (needs the ``adan-pytorch`` package)."""
    groups = weight_decay_groups(model, args.adam_weight_decay)
    if args.optimizer == "adamw":
        fused = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(
            groups,
            lr=learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            fused=fused or None,
        )
    if args.optimizer == "adan":
        try:
            from adan_pytorch import Adan
        except ImportError as err:
            raise ImportError(
                "--optimizer adan needs the adan-pytorch package: `pip install adan-pytorch` "
                "(or `pip install diffusers-lmd[train]`)."
            ) from err
        return Adan(groups, lr=learning_rate, betas=ADAN_BETAS, eps=args.adam_epsilon)
    raise ValueError(f"Unknown --optimizer {args.optimizer!r}; choose adamw or adan.")


def warmup_steps(args: argparse.Namespace, max_train_steps: int) -> int:
    """``--lr_warmup_steps``, or 5% of the training steps when unset."""
    if args.lr_warmup_steps is not None:
        return args.lr_warmup_steps
    return max(1, round(0.05 * max_train_steps))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, args: argparse.Namespace, max_train_steps: int, num_processes: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' ``get_scheduler``; steps are counted per process, as Accelerate steps it once per process."""
    return get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=warmup_steps(args, max_train_steps) * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )


def build_ema(model: nn.Module, args: argparse.Namespace) -> EMAModel:
    """diffusers' ``EMAModel`` over ``model``'s weights, with the warm-up of the example scripts."""
    return EMAModel(
        model.parameters(),
        decay=args.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=args.ema_inv_gamma,
        power=args.ema_power,
        model_cls=type(model),
        model_config=model.config,
    )


def register_ema_hooks(accelerator, ema: EMAModel, subfolder: str = "ema") -> None:
    """Save the EMA weights (safetensors, via ``save_pretrained``) in every checkpoint and restore them on load."""
    model_cls = ema.model_cls

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            ema.save_pretrained(os.path.join(output_dir, subfolder))

    def load_hook(models, input_dir):
        loaded = EMAModel.from_pretrained(os.path.join(input_dir, subfolder), model_cls)
        ema.load_state_dict(loaded.state_dict())
        ema.to(accelerator.device)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
