"""Optimiser, learning-rate schedule and EMA construction, from the options the shared training flags set."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn

# Adan's paper defaults (beta1, beta2, beta3) = (0.98, 0.92, 0.99); adan-pytorch takes one minus each.
ADAN_BETAS = (0.02, 0.08, 0.01)


@dataclass
class OptimizerConfig:
    """The optimiser, its learning-rate schedule and the EMA of the weights: one field per shared training flag
    (``--optimizer``, ``--adam_*``, ``--lr_scheduler``, ``--lr_warmup_steps``, ``--ema_*``), with its default.

    Args:
        optimizer: ``"adamw"`` (MAE) or ``"adan"``.
        use_8bit_adam: AdamW in 8 bits (bitsandbytes' ``AdamW8bit``), as diffusers' example scripts offer it.
        adam_beta1 / adam_beta2 / adam_weight_decay / adam_epsilon: AdamW's (Adan uses its paper's betas).
        lr_scheduler: a diffusers ``get_scheduler`` name.
        lr_warmup_steps: linear warm-up steps; ``None`` for 5% of the training steps.
        ema_max_decay / ema_inv_gamma / ema_power: diffusers' ``EMAModel`` decay and warm-up.
    """

    optimizer: str = "adamw"
    use_8bit_adam: bool = False
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_weight_decay: float = 0.05
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int | None = None
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75


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


def build_optimizer(model: nn.Module, config: OptimizerConfig, learning_rate: float) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or Adan (needs the ``adan-pytorch`` package), as ``config.optimizer`` says."""
    groups = weight_decay_groups(model, config.adam_weight_decay)
    if config.optimizer == "adamw" and config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError("--use_8bit_adam needs the bitsandbytes package: `pip install bitsandbytes`.") from err
        betas = (config.adam_beta1, config.adam_beta2)
        return bnb.optim.AdamW8bit(groups, lr=learning_rate, betas=betas, eps=config.adam_epsilon)
    if config.optimizer == "adamw":
        fused = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(
            groups,
            lr=learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            fused=fused or None,
        )
    if config.optimizer == "adan":
        try:
            from adan_pytorch import Adan
        except ImportError as err:
            raise ImportError(
                "--optimizer adan needs the adan-pytorch package: `pip install adan-pytorch` "
                '(or `pip install ".[train]"` in a clone of diffusers-lmd).'
            ) from err
        return Adan(groups, lr=learning_rate, betas=ADAN_BETAS, eps=config.adam_epsilon)
    raise ValueError(f"Unknown --optimizer {config.optimizer!r}; choose adamw or adan.")


def warmup_steps(config: OptimizerConfig, max_train_steps: int) -> int:
    """``lr_warmup_steps``, or 5% of the training steps when unset."""
    if config.lr_warmup_steps is not None:
        return config.lr_warmup_steps
    return max(1, round(0.05 * max_train_steps))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimizerConfig, max_train_steps: int, num_processes: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' ``get_scheduler``; steps are counted per process, as Accelerate steps it once per process."""
    return get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=warmup_steps(config, max_train_steps) * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )


def build_ema(model: nn.Module, config: OptimizerConfig) -> EMAModel:
    """diffusers' ``EMAModel`` over ``model``'s weights, with the warm-up of the example scripts."""
    return EMAModel(
        model.parameters(),
        decay=config.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=config.ema_inv_gamma,
        power=config.ema_power,
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
