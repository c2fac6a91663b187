"""The fine-tuning comparison of paper Table 2: an LMD-CS encoder against an MAE-pretrained ViT of the same size.

Both encoders are pre-trained for the same wall-clock budget by the efficiency benchmark's loop
(:func:`lmd_bench.efficiency_loop.train_for_budget`: same images, batch order, optimiser and budget; LMD on cached
projector latents with the cosine mask schedule, transformers' ``ViTMAEForPreTraining`` on pixels at mask 0.75,
with the same number of tokens per image). Each is then fine-tuned for the same wall-clock budget by
:func:`~diffusers_lmd.classification.finetune` with the same recipe, and scored by MAT@1/MAT@5 (method.md §5), final
top-1 and the time to the best top-1 that both reach. A control fine-tunes the LMD encoder from its initialisation
(no pre-training), to show what pre-training adds.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from accelerate import Accelerator

from diffusers_lmd.classification import apply_layer_decay, finetune, summarize_accuracy, time_to_accuracy
from diffusers_lmd.data import TensorDictDataset
from diffusers_lmd.models import LMDModel
from diffusers_lmd.models.lmd_classifier import LMDForImageClassification
from diffusers_lmd.projector import Projector, encode_images
from diffusers_lmd.training.optim import OptimizerConfig, build_lr_scheduler, build_optimizer

from .budget import MAX_GRAD_NORM, RunSettings
from .data import BenchmarkData
from .efficiency_loop import train_for_budget
from .efficiency_registry import build_method
from .finetune_presets import FinetunePreset
from .vit_baseline import vit_classifier_from_mae, vit_layer_id

# Paper Table 2 (ImageNet-1K fine-tuning), MAT@1 / MAT@5 in the paper's units.
PAPER_TABLE_2 = {"mae": (0.374, 0.253), "lmd-ps": (0.158, 0.137), "lmd-cs": (0.135, 0.102)}
# Rows whose encoder is an LMDModel on pixels (fine-tuned on pixels as its "latents"), not on projector latents.
PIXEL_LMD_ROWS = ("mae-ours",)


def pretrain(preset: FinetunePreset, vae: Projector, data: BenchmarkData, device: str, seed: int = 0):
    """Pre-train LMD-CS and MAE for ``preset.pretrain_s`` seconds each; return ``{row: (method, loop row)}``."""
    efficiency = preset.efficiency_preset()
    data = dataclasses.replace(data, eval_images=data.eval_images[: preset.pretrain_eval_images])
    trained = {}
    for row, method_name in preset.pretrain_methods.items():
        method = build_method(method_name, efficiency, vae, seed=seed)
        trained[row] = (method, train_for_budget(method, data, efficiency, RunSettings(device, seed)))
    return trained


def classifiers(trained: dict, num_labels: int, pooling: str = "cls", seed: int = 0) -> dict[str, torch.nn.Module]:
    """Fresh heads on the pre-trained encoders (``LMDForImageClassification`` for ``LMDModel`` encoders, on latents
    or pixels; transformers' ``ViTForImageClassification`` for the ViTMAE; all read the CLS token after the final
    LayerNorm), and the control ``lmd-scratch``: the LMD encoder at its initialisation (the same seed)."""
    models = {}
    for row, (method, _) in trained.items():
        if isinstance(method.model, LMDModel):
            models[row] = LMDForImageClassification.from_lmd_model(method.model, num_labels, pooling=pooling)
        else:
            models[row] = vit_classifier_from_mae(method.model, num_labels)
    torch.manual_seed(seed)
    scratch = LMDModel.from_config(trained["lmd-cs"][0].model.config)
    models["lmd-scratch"] = LMDForImageClassification.from_lmd_model(scratch, num_labels, pooling=pooling)
    return models


def finetune_datasets(
    data: BenchmarkData, vae: Projector, train_labels: torch.Tensor, eval_labels: torch.Tensor, batch_size: int = 256
) -> dict[str, tuple[TensorDictDataset, TensorDictDataset]]:
    """The same images for every run: cached latents for the LMD encoders, pixels for the ViT and for the LMDModel
    encoders trained on pixels (as their "latents"); no augmentation."""
    eval_latents = torch.cat([encode_images(vae, chunk).float().cpu() for chunk in data.eval_images.split(batch_size)])
    latents = (
        TensorDictDataset(latents=data.train_latents.cpu(), labels=train_labels),
        TensorDictDataset(latents=eval_latents, labels=eval_labels),
    )
    pixels = (
        TensorDictDataset(pixel_values=data.train_images.cpu(), labels=train_labels),
        TensorDictDataset(pixel_values=data.eval_images.cpu(), labels=eval_labels),
    )
    pixels_as_latents = (
        TensorDictDataset(latents=data.train_images.cpu(), labels=train_labels),
        TensorDictDataset(latents=data.eval_images.cpu(), labels=eval_labels),
    )
    return {
        "lmd-cs": latents,
        "mae": pixels,
        "lmd-scratch": latents,
        **{row: pixels_as_latents for row in PIXEL_LMD_ROWS},
    }


def finetune_optimizer_config(preset: FinetunePreset) -> OptimizerConfig:
    """The fine-tuning recipe: AdamW 0.9/0.999, weight decay 0.05, constant after the preset's warm-up."""
    return OptimizerConfig(
        adam_beta2=0.999, lr_scheduler="constant_with_warmup", lr_warmup_steps=preset.lr_warmup_steps
    )


def finetune_for_budget(
    model: torch.nn.Module,
    layer_id,
    num_layers: int,
    datasets: tuple[TensorDictDataset, TensorDictDataset],
    preset: FinetunePreset,
    device: str = "cpu",
    seed: int = 0,
) -> list[dict]:
    """Fine-tune ``model`` for ``preset.finetune_s`` training seconds; return its evaluation records."""
    precision = preset.mixed_precision if device.startswith("cuda") and preset.mixed_precision else "no"
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)  # bf16 on CUDA, as pre-training
    config = finetune_optimizer_config(preset)
    optimizer = build_optimizer(model, config, preset.finetune_learning_rate)
    apply_layer_decay(optimizer, model, preset.layer_decay, layer_id, num_layers)
    lr_scheduler = build_lr_scheduler(optimizer, config, max_train_steps=10**9, num_processes=1)
    generator = torch.Generator().manual_seed(seed)
    train = torch.utils.data.DataLoader(
        datasets[0], batch_size=preset.finetune_batch_size, shuffle=True, drop_last=True, generator=generator
    )
    evaluation = torch.utils.data.DataLoader(datasets[1], batch_size=256)
    model, optimizer, train, evaluation, lr_scheduler = accelerator.prepare(
        model, optimizer, train, evaluation, lr_scheduler
    )
    return finetune(
        accelerator,
        model,
        optimizer,
        lr_scheduler,
        train,
        evaluation,
        max_train_steps=10**9,
        max_train_seconds=preset.finetune_s,
        eval_steps=preset.eval_steps,
        max_grad_norm=MAX_GRAD_NORM,
        show_progress=False,
    )


def layer_ids(model: torch.nn.Module):
    """``(layer_id, num_layers)`` of either classifier, for layer-wise learning-rate decay."""
    if isinstance(model, LMDForImageClassification):
        return model.layer_id, model.num_layers
    return vit_layer_id(model.config.num_hidden_layers), model.config.num_hidden_layers


def finetune_all(
    models: dict[str, torch.nn.Module], datasets: dict, preset: FinetunePreset, device: str = "cpu", seed: int = 0
) -> dict[str, list[dict]]:
    """Fine-tune each classifier with the same recipe, data order and budget."""
    return {
        name: finetune_for_budget(model, *layer_ids(model), datasets[name], preset, device, seed)
        for name, model in models.items()
    }


def _finite(value: float) -> float | None:
    """``None`` for an infinite MAT (accuracy never improved), so the JSON stays standard."""
    return value if math.isfinite(value) else None


def top1_at_step(records: list[dict], step: int) -> float:
    """Top-1 accuracy of the last evaluation at or before ``step``: a comparison that machine load cannot skew."""
    return [r["top1"] for r in records if r["step"] <= step][-1]


def comparison_rows(
    curves: dict[str, list[dict]], pretrain_rows: dict[str, dict], eval_steps: int
) -> tuple[list[dict], float, int]:
    """One row per run (MAT@1, MAT@5, final/best top-1, time to the common target) and the target top-1.

    The target is the best top-1 that both pre-trained runs reach (the lower of their bests), so both have a time
    to it; a run without pre-training (no entry in ``pretrain_rows``) is timed to the same target. Each row also
    has its top-1 after ``common_step`` optimiser steps, the last evaluation step that every run reached (returned
    third): on a shared machine the load changes the steps per second, not the accuracy per step.
    """
    target = min(max(r["top1"] for r in records) for name, records in curves.items() if name in pretrain_rows)
    common_step = min(records[-1]["step"] // eval_steps * eval_steps for records in curves.values())
    rows = []
    for name, records in curves.items():
        summary = summarize_accuracy(records)
        pre = pretrain_rows.get(name, {"steps": 0, "mit_s": None, "final_psnr": None})
        rows.append(
            {
                "method": name,
                "pretrain_steps": pre["steps"],
                "pretrain_mit_s": pre["mit_s"],
                "pretrain_final_psnr": pre["final_psnr"],
                "finetune_steps": summary["steps"],
                "finetune_s": summary["train_seconds"],
                "mat_at_1": _finite(summary["mat_at_1"]),
                "mat_at_5": _finite(summary["mat_at_5"]),
                "final_top1": summary["final_top1"],
                "final_top5": summary["final_top5"],
                "best_top1": summary["best_top1"],
                "time_to_target_s": time_to_accuracy(records, target),
                "top1_at_common_step": top1_at_step(records, common_step),
                "curve": records,
            }
        )
    return rows, target, common_step
