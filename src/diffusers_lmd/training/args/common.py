"""Command-line flags shared by every training script, named as in diffusers' example scripts.

Each script builds its own ``argparse`` parser, adds the data flags (:func:`~.data.add_data_args`), these training
flags (and :func:`add_pretrained_args` when it loads a pretrained model), then its model's own flags, and can change
a default with ``parser.set_defaults``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import fields
from typing import TypeVar, get_args, get_type_hints

from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType
from diffusers.optimization import SchedulerType

from ..hub import HUB_STRATEGIES
from ..optim import OptimizerConfig

OPTIMIZERS = ("adamw", "adan")
LR_SCHEDULERS = tuple(s.value for s in SchedulerType if s != SchedulerType.PIECEWISE_CONSTANT)
OPTIM = OptimizerConfig()  # the optimiser flags' defaults are the options' defaults
REPORT_TO = ("none", *(tracker.value for tracker in LoggerType))  # Accelerate's trackers, "all" and "none"
Options = TypeVar("Options")
# The optimiser flags whose type and default are OPTIM's: name and help.
ADAM_FLAGS = {
    "lr_warmup_steps": "Linear warm-up steps; default 5%% of the training steps (MAE: 40 of 800 epochs).",
    "adam_beta1": "AdamW beta1 (MAE: 0.9).",
    "adam_beta2": "AdamW beta2 (MAE: 0.95).",
    "adam_weight_decay": "Decoupled weight decay (not on biases and norms).",
    "adam_epsilon": "Optimiser epsilon.",
    "use_8bit_adam": "AdamW in 8 bits (bitsandbytes' AdamW8bit, CUDA), as diffusers.",
}
EMA_FLAGS = {
    "ema_max_decay": "Largest EMA decay.",
    "ema_inv_gamma": "EMA warm-up inverse gamma.",
    "ema_power": "EMA warm-up power.",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's ``--help`` line ends with its default; a script's description keeps its own line breaks."""


def add_option_flags(group: argparse._ActionsContainer, defaults, flags: dict[str, str]) -> None:
    """Add a ``--name`` flag for each ``name: help`` of ``flags``, in order, with the type and default of the field
    ``name`` of ``defaults`` (an options dataclass): the options state each flag's type and default once. An
    optional field's flag takes the type inside (``int | None``: ``int``); a ``bool`` field, off by default, is a
    ``store_true`` switch."""
    hints = get_type_hints(type(defaults))
    for name, text in flags.items():
        kind, default = hints[name], getattr(defaults, name)
        if kind is bool:
            group.add_argument(f"--{name}", action="store_true", default=default, help=text)
        else:
            kind = next((arg for arg in get_args(kind) if arg is not type(None)), kind)
            group.add_argument(f"--{name}", type=kind, default=default, help=text)


def add_pretrained_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--revision``, ``--variant`` and ``--cache_dir`` (as in diffusers' example scripts) for a script that
    loads a pretrained model from the Hub; see :func:`diffusers_lmd.training.pretrained.resolve_pretrained`."""
    pretrained = parser.add_argument_group("pretrained models")
    pretrained.add_argument(
        "--revision",
        type=str,
        default=None,
        help="Revision (branch, tag or commit) of the pretrained model's Hub repository.",
    )
    pretrained.add_argument(
        "--variant",
        type=str,
        default=None,
        help="Variant of the pretrained model's weight files, e.g. fp16 for diffusion_pytorch_model.fp16.safetensors.",
    )
    pretrained.add_argument(
        "--cache_dir",
        type=str,
        default=None,
        help="Where models downloaded from the Hub are cached (default: $HF_HUB_CACHE).",
    )
    return parser


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the optimisation, precision, checkpoint, logging and Hub flags to ``parser`` and return it."""
    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", type=str, default="lmd-output", help="Where checkpoints and the model go.")
    run.add_argument(
        "--seed", type=int, default=0, help="Seeds the weights, the data order and every per-step mask and flip."
    )
    run.add_argument("--train_batch_size", type=int, default=16, help="Batch size per device.")
    run.add_argument(
        "--num_train_epochs",
        "--num_epochs",
        type=int,
        default=100,
        help="Epochs, unless --max_train_steps is set (--num_epochs: the name of diffusers' train_unconditional.py).",
    )
    run.add_argument(
        "--max_train_steps", type=int, default=None, help="Total optimiser steps; overrides --num_train_epochs."
    )
    run.add_argument(
        "--gradient_accumulation_steps", type=int, default=1, help="Micro-batches accumulated per optimiser step."
    )

    optim = parser.add_argument_group("optimiser")
    optim.add_argument(
        "--optimizer", type=str, default=OPTIM.optimizer, choices=OPTIMIZERS, help="AdamW (MAE) or Adan."
    )
    optim.add_argument(
        "--learning_rate", type=float, default=1.5e-4, help="Peak learning rate (the base rate with --scale_lr)."
    )
    optim.add_argument(
        "--scale_lr",
        action="store_true",
        help="MAE's rule: learning_rate x total batch (per-device batch x processes x accumulation) / 256.",
    )
    optim.add_argument(
        "--lr_scheduler", type=str, default=OPTIM.lr_scheduler, choices=LR_SCHEDULERS, help="LR schedule."
    )
    add_option_flags(optim, OPTIM, ADAM_FLAGS)
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm; 0 disables it.")
    optim.add_argument(
        "--use_ema",
        action="store_true",
        help="Keep an EMA of the weights (diffusers' EMAModel), validate on it and save it as the model.",
    )
    add_option_flags(optim, OPTIM, EMA_FLAGS)

    precision = parser.add_argument_group("precision")
    precision.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Autocast precision; default: the `accelerate config` value.",
    )
    precision.add_argument(
        "--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere and newer GPUs (faster)."
    )

    ckpt = parser.add_argument_group("checkpoints")
    ckpt.add_argument(
        "--checkpointing_steps", type=int, default=500, help="Save the full training state every N optimiser steps."
    )
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep only the newest N checkpoints.")
    ckpt.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help='A checkpoint folder, or "latest" for the newest one in --output_dir.',
    )

    logs = parser.add_argument_group("logging and validation")
    logs.add_argument(
        "--report_to",
        "--logger",
        type=str,
        default="tensorboard",
        choices=REPORT_TO,
        help="Accelerate's tracker for scalars and images, all installed ones, or none (--logger: the name of "
        "diffusers' train_unconditional.py).",
    )
    logs.add_argument("--logging_dir", type=str, default="logs", help="Tracker folder, inside --output_dir.")
    logs.add_argument("--tracker_project_name", type=str, default=None, help="Tracker run name (default: script).")
    logs.add_argument(
        "--validation_steps", type=int, default=500, help="Evaluate on held-out images every N optimiser steps."
    )

    hub = parser.add_argument_group("hub")
    hub.add_argument(
        "--push_to_hub",
        action="store_true",
        help="Upload the model folder to the Hub; the repository is created when the run starts.",
    )
    hub.add_argument("--hub_model_id", type=str, default=None, help="Repo id (default: the --output_dir name).")
    hub.add_argument("--hub_token", type=str, default=None, help="Hub token (default: the logged-in one).")
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repo as private.")
    hub.add_argument(
        "--hub_strategy",
        type=str,
        default="end",
        choices=HUB_STRATEGIES,
        help='"end": upload once, at the end; "every_save": also upload the current model at every checkpoint '
        "(in the background), as transformers' Trainer does.",
    )
    hub.add_argument(
        "--hub_license",
        type=str,
        default=None,
        help="Licence of the trained weights for the model card, a Hub licence id such as apache-2.0 or mit "
        "(default: none stated; it depends on the training data).",
    )

    # What a command pasted from diffusers' example scripts carries: accepted where it means something here.
    compat = parser.add_argument_group("diffusers' example-script flags")
    compat.add_argument(
        "--local_rank",
        type=int,
        default=-1,
        help="Set by torch.distributed.launch; Accelerate (accelerate launch, torchrun) reads the rank from the "
        "environment, so any value is accepted and the environment wins.",
    )
    compat.add_argument(
        "--validation_epochs",
        type=int,
        default=None,
        help="Refused with a message: these scripts validate every --validation_steps optimiser steps.",
    )
    return parser


def check_training_args(args: argparse.Namespace) -> None:
    """Raise a ``ValueError`` naming the first training flag that cannot work."""
    positive = ["train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps"]
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise ValueError(f"--max_train_steps must be at least 1, got {args.max_train_steps}.")
    if args.max_train_steps is None and args.num_train_epochs < 1:
        raise ValueError(f"--num_train_epochs must be at least 1, got {args.num_train_epochs}.")
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {args.learning_rate}.")
    if args.lr_warmup_steps is not None and args.lr_warmup_steps < 0:
        raise ValueError(f"--lr_warmup_steps must be non-negative, got {args.lr_warmup_steps}.")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be at least 1, got {args.checkpoints_total_limit}.")
    if args.max_grad_norm < 0:
        raise ValueError(f"--max_grad_norm must be non-negative (0 disables clipping), got {args.max_grad_norm}.")
    if args.push_to_hub and args.hub_token is not None and args.report_to in ("wandb", "all"):
        raise ValueError(
            "Do not pass --hub_token together with --report_to wandb: the token could leak into the run's logs. "
            "Log in with `hf auth login` instead."
        )
    strategy = args.hub_strategy
    if strategy not in HUB_STRATEGIES:
        raise ValueError(f"--hub_strategy must be one of {HUB_STRATEGIES}, got {strategy!r}.")
    if strategy != "end" and not args.push_to_hub:
        raise ValueError(f"--hub_strategy {strategy} uploads to the Hub: add --push_to_hub.")
    if not args.output_dir:
        raise ValueError("--output_dir must name a folder.")
    args.output_dir = os.fspath(args.output_dir)
    check_report_to(args.report_to)
    check_optimizer_args(args)
    check_diffusers_flags(args)


def check_report_to(report_to: str) -> None:
    """A named tracker must be installed: Accelerate would only warn and train untracked."""
    if report_to in ("all", "none"):
        return
    installed = [tracker.value for tracker in get_available_trackers()]
    if report_to not in installed:
        raise ValueError(
            f"--report_to {report_to} needs the {report_to} package, which is not installed: `pip install {report_to}`"
            f", or pick an installed tracker ({', '.join(installed) or 'none is installed'}) or --report_to none."
        )


def check_optimizer_args(args: argparse.Namespace) -> None:
    """Refuse optimiser flags that the chosen optimiser would ignore."""
    if args.optimizer == "adan" and (args.adam_beta1, args.adam_beta2) != (OPTIM.adam_beta1, OPTIM.adam_beta2):
        raise ValueError(
            "--adam_beta1/--adam_beta2 set AdamW's betas; --optimizer adan uses its paper's three betas "
            "(0.02, 0.08, 0.01) and would ignore them: drop them, or use --optimizer adamw."
        )
    if args.use_8bit_adam:
        if args.optimizer != "adamw":
            raise ValueError("--use_8bit_adam is 8-bit AdamW: it needs --optimizer adamw.")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("--use_8bit_adam needs the bitsandbytes package: `pip install bitsandbytes` (CUDA only).")


def check_diffusers_flags(args: argparse.Namespace) -> None:
    """Flags that diffusers' example scripts have and these scripts do not use: say what to use instead."""
    if args.validation_epochs is not None:
        raise ValueError(
            f"--validation_epochs {args.validation_epochs}: these scripts validate every --validation_steps optimiser "
            "steps; pass --validation_steps (an epoch is len(dataset) / (--train_batch_size x processes x "
            "--gradient_accumulation_steps) steps)."
        )


def flag_values(args: argparse.Namespace, *names: str) -> dict:
    """The parsed values of the flags ``names``, keyed by name: the keyword arguments of a function whose parameters
    are named like the flags."""
    return {name: getattr(args, name) for name in names}


def options_from_args(cls: type[Options], args: argparse.Namespace) -> Options:
    """``cls``, a dataclass of options named like the flags, filled from the parsed flags the script has (the
    others keep their defaults)."""
    return cls(**flag_values(args, *(f.name for f in fields(cls) if hasattr(args, f.name))))


def optimizer_config(args: argparse.Namespace) -> OptimizerConfig:
    """The optimiser, schedule and EMA options of the parsed shared training flags."""
    return options_from_args(OptimizerConfig, args)


def accelerator_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`~diffusers_lmd.training.runtime.build_accelerator` the shared flags set."""
    return flag_values(args, "logging_dir", "gradient_accumulation_steps", "mixed_precision", "report_to", "allow_tf32")


def total_batch_size(args: argparse.Namespace, num_processes: int) -> int:
    """Images per optimiser step over all devices."""
    return args.train_batch_size * num_processes * args.gradient_accumulation_steps


def effective_learning_rate(args: argparse.Namespace, num_processes: int) -> float:
    """``--learning_rate``, scaled by the total batch over 256 when ``--scale_lr`` is set (MAE's rule)."""
    if not args.scale_lr:
        return args.learning_rate
    return args.learning_rate * total_batch_size(args, num_processes) / 256
