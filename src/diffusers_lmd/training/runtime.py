"""What every training engine runs in: the run's ``Accelerator``, the dtype of its frozen models, and the error a
loop raises when its loss stops being finite."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stopped without writing anything after it."""


def has_accelerator() -> bool:
    """Whether torch sees a GPU or other accelerator."""
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def build_accelerator(
    output_dir: str,
    *,
    logging_dir: str = "logs",
    gradient_accumulation_steps: int = 1,
    mixed_precision: str | None = None,
    report_to: str = "tensorboard",
    compile: bool = False,
    allow_tf32: bool = False,
) -> Accelerator:
    """An ``Accelerator`` with the run's precision, accumulation, tracker, compile and seedable data order.

    Args:
        output_dir: the run's folder; the trackers write to ``{output_dir}/{logging_dir}``.
        report_to: ``"tensorboard"``, ``"wandb"``, ``"all"`` or ``"none"``.
        compile: ``torch.compile`` the prepared models (inductor).
        allow_tf32: allow TF32 matmuls on a CUDA GPU.
    """
    project = ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, logging_dir))
    accelerator = Accelerator(
        cpu=not has_accelerator(),  # lets `torchrun --nproc_per_node N` run N gloo processes on a CPU-only host
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=None if report_to == "none" else report_to,
        project_config=project,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        dynamo_backend="inductor" if compile else None,
    )
    if allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    return accelerator


def weight_dtype(accelerator: Accelerator) -> torch.dtype:
    """The mixed-precision dtype (fp32 without mixed precision): what frozen models run in, as in diffusers' example
    scripts."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
