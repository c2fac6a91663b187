"""The fine-tuning comparison of paper Table 2: an LMD-CS encoder against an MAE-pretrained ViT of the same size.

Both encoders are pre-trained for the same wall-clock budget by the efficiency benchmark's loop
(:func:`lmd_bench.efficiency_loop.train_for_budget`: same images, batch order, optimiser and budget; LMD on cached
projector latents with the cosine mask schedule, transformers' ``ViTMAEForPreTraining`` on pixels at mask 0.75,
with the same number of tokens per image). Each is then fine-tuned for the same wall-clock budget by
:func:`~diffusers_lmd.classification.finetune` with the same recipe, and scored by MAT@1/MAT@5 (SPEC §5), final
top-1 and the time to the best top-1 that both reach. A control fine-tunes the LMD encoder from its initialisation
(no pre-training), to show what pre-training adds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from diffusers_lmd.classification import apply_layer_decay, finetune, summarize_accuracy, time_to_accuracy
from diffusers_lmd.data import TensorDictDataset
from diffusers_lmd.models import LMDModel
from diffusers_lmd.models.lmd_classifier import LMDForImageClassification
from diffusers_lmd.projector import Projector, encode_images
from diffusers_lmd.training.args import add_training_args
from diffusers_lmd.training.optim import build_lr_scheduler, build_optimizer

from .data import BenchmarkData
from .efficiency_loop import train_for_budget
from .efficiency_presets import EfficiencyPreset
from .efficiency_presets import get_preset as get_efficiency_preset
from .efficiency_registry import build_method
from .vit_baseline import vit_classifier_from_mae, vit_layer_id

# Paper Table 2 (ImageNet-1K fine-tuning), MAT@1 / MAT@5 in the paper's units.
PAPER_TABLE_2 = {"mae": (0.374, 0.253), "lmd-ps": (0.158, 0.137), "lmd-cs": (0.135, 0.102)}
PRETRAIN_METHODS = {"lmd-cs": "lmd-cs", "mae": "mae-pixel"}  # our row -> efficiency-benchmark method
# Rows whose encoder is an LMDModel on pixels (fine-tuned on pixels as its "latents"), not on projector latents.
PIXEL_LMD_ROWS = ("mae-ours",)


@dataclass(frozen=True)
class FinetunePreset:
    """One configuration of the comparison; every number applies to both methods.

    Args:
        resolution: image side in pixels (MNIST digits are resized and converted to RGB).
        lmd_preset: ``LMDModel`` preset of both encoders; the ViT gets the same widths, depths and heads.
        patch_size: latent patch side of LMD; the ViT's pixel patch is ``f x patch_size`` (same token count).
        pretrain_s / finetune_s: wall-clock seconds of pre-training / fine-tuning per method.
        pretrain_batch_size / pretrain_learning_rate: the pre-training loop's batch and AdamW rate.
        finetune_batch_size / finetune_learning_rate / layer_decay / lr_warmup_steps: the fine-tuning recipe
            (AdamW 0.9/0.999, weight decay 0.05, constant rate after warm-up, layer-wise LR decay).
        eval_steps: fine-tuning steps between top-1/top-5 evaluations (the resolution of MAT@k).
        num_pretrain_evals / pretrain_eval_images: held-out PSNR points of pre-training (besides the one at time
            0) and the images they use; context only, so kept cheap.
        max_eval_samples: held-out digits evaluated.
        projector_path: the projector to use, relative to the repository (``None``: train one on the digits).
        projector_args: ``training/train_projector.py`` flags used when the projector has to be trained.
        mixed_precision: ``"bf16"`` on CUDA, ``None`` for fp32.
        efficiency_base: pre-train exactly as this efficiency-benchmark preset does (its architecture overrides and
            swept per-method rates), with this preset's budget, batch and evaluation sizes.
        data_flags: data flags of a real labelled data set (``add_data_args``'s); empty for the MNIST digits.
        pretrain_methods: fine-tuning row -> efficiency-benchmark method that pre-trains its encoder.
    """

    name: str
    resolution: int
    lmd_preset: str
    pretrain_s: float
    finetune_s: float
    pretrain_batch_size: int
    pretrain_learning_rate: float
    finetune_batch_size: int
    finetune_learning_rate: float
    eval_steps: int
    patch_size: int = 2
    layer_decay: float = 0.75
    lr_warmup_steps: int = 20
    max_eval_samples: int = 1000
    num_pretrain_evals: int = 1
    pretrain_eval_images: int = 200
    projector_path: str | None = None
    projector_args: tuple[str, ...] = field(default_factory=tuple)
    mixed_precision: str | None = None
    efficiency_base: str | None = None
    data_flags: tuple[str, ...] = ()
    pretrain_methods: dict = field(default_factory=lambda: dict(PRETRAIN_METHODS))

    def efficiency_preset(self) -> EfficiencyPreset:
        """The pre-training configuration in the efficiency benchmark's terms."""
        if self.efficiency_base is not None:
            return get_efficiency_preset(self.efficiency_base).with_overrides(
                name=f"finetune-{self.name}",
                budget_s=self.pretrain_s,
                train_batch_size=self.pretrain_batch_size,
                num_evals=self.num_pretrain_evals,
            )
        return EfficiencyPreset(
            name=f"finetune-{self.name}",
            resolution=self.resolution,
            budget_s=self.pretrain_s,
            train_batch_size=self.pretrain_batch_size,
            learning_rate=self.pretrain_learning_rate,
            num_evals=self.num_pretrain_evals,
            lmd_preset=self.lmd_preset,
            projector_args=self.projector_args,
            patch_size=self.patch_size,
            lr_warmup_steps=self.lr_warmup_steps,
            mixed_precision=self.mixed_precision,
        )


PRESETS: dict[str, FinetunePreset] = {
    # Two shared CPU cores: 32-px digits through the committed demo projector (f=4, trained on photos, not
    # digits: 8x8x4 latents, 16 tokens of patch 2; the ViT has 16 tokens of 8x8 pixels). The encoders are the
    # "tiny" preset (2 blocks of width 32): the "small" one gets only ~20 steps per minute on two busy cores,
    # too few for an accuracy curve. Without the demo projector, a small one is trained on the digits (200 steps,
    # reconstruction losses only: the latents need to carry the digit, not look sharp).
    "cpu": FinetunePreset(
        name="cpu",
        resolution=32,
        lmd_preset="tiny",
        pretrain_s=90.0,
        finetune_s=75.0,
        pretrain_batch_size=64,
        pretrain_learning_rate=1e-3,
        finetune_batch_size=64,
        finetune_learning_rate=1e-3,
        eval_steps=20,
        projector_path="assets/demo-projector",
        projector_args=(
            "--block_out_channels", "16", "32", "64", "--norm_num_groups", "16", "--no_mid_block_attention",
            "--latent_channels", "4", "--num_vq_embeddings", "256", "--max_train_steps", "200",
            "--train_batch_size", "16", "--learning_rate", "1e-3", "--disc_start", "1000000",
            "--validation_steps", "200",
        ),
    ),
    # One H200: 64-px digits, 16x16x4 latents (64 tokens) against a ViT with 8-px patches (64 tokens), ViT-B
    # encoders (12 blocks of width 768) in bf16.
    "gpu": FinetunePreset(
        name="gpu",
        resolution=64,
        lmd_preset="base",
        pretrain_s=240.0,
        finetune_s=120.0,
        pretrain_batch_size=256,
        pretrain_learning_rate=1.5e-4 * 256 / 256 * 2,
        finetune_batch_size=256,
        finetune_learning_rate=5e-4,
        eval_steps=10,
        layer_decay=0.65,
        projector_args=(
            "--block_out_channels", "64", "128", "128", "--latent_channels", "4", "--num_vq_embeddings", "1024",
            "--max_train_steps", "1500", "--train_batch_size", "64", "--learning_rate", "5e-4", "--disc_start", "1000",
            "--validation_steps", "1500", "--mixed_precision", "bf16",
        ),
        mixed_precision="bf16",
    ),
}  # fmt: skip

# Fashion-MNIST on two CPU cores: encoders pre-trained exactly as in the efficiency benchmark's fmnist-cpu preset
# (same ViT, projector, swept rates and 120 s budget), then fine-tuned on the training labels, scored on a fixed
# 2,000-image subset of the test split. Both MAEs of that benchmark are pre-trained: transformers' ViTMAE and our
# LMDModel on pixels at 0.75. Fine-tuning runs 240 s (~550 steps, 0.6 epoch): at 90 s (200 steps) every encoder,
# the untrained one included, was still within a few points of the others.
PRESETS["fmnist-cpu"] = FinetunePreset(
    name="fmnist-cpu",
    resolution=32,
    lmd_preset="small",
    pretrain_s=120.0,
    finetune_s=240.0,
    pretrain_batch_size=64,
    pretrain_learning_rate=1e-3,
    finetune_batch_size=64,
    finetune_learning_rate=1e-3,
    eval_steps=25,
    max_eval_samples=2000,
    projector_path="assets/fashion-mnist-projector",
    efficiency_base="fmnist-cpu",
    data_flags=("--dataset_name", "fashion_mnist", "--pad_to_resolution"),
    pretrain_methods={"lmd-cs": "lmd-cs", "mae": "mae-pixel", "mae-ours": "mae-ours"},
)


def get_preset(name: str) -> FinetunePreset:
    """The named preset, or a ``ValueError`` listing the names."""
    if name not in PRESETS:
        raise ValueError(f"Unknown fine-tuning preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def pretrain(preset: FinetunePreset, vae: Projector, data: BenchmarkData, device: str, seed: int = 0):
    """Pre-train LMD-CS and MAE for ``preset.pretrain_s`` seconds each; return ``{row: (method, loop row)}``."""
    efficiency = preset.efficiency_preset()
    data = dataclasses.replace(data, eval_images=data.eval_images[: preset.pretrain_eval_images])
    trained = {}
    for row, method_name in preset.pretrain_methods.items():
        method = build_method(method_name, efficiency, vae, seed=seed)
        trained[row] = (method, train_for_budget(method, data, efficiency, device=device, seed=seed))
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


def finetune_args(preset: FinetunePreset) -> argparse.Namespace:
    """The shared training flags with the fine-tuning recipe: AdamW 0.9/0.999, wd 0.05, constant after warm-up."""
    args = add_training_args(argparse.ArgumentParser()).parse_args([])
    args.learning_rate, args.adam_beta2 = preset.finetune_learning_rate, 0.999
    args.lr_scheduler, args.lr_warmup_steps = "constant_with_warmup", preset.lr_warmup_steps
    return args


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
    args = finetune_args(preset)
    optimizer = build_optimizer(model, args, args.learning_rate)
    apply_layer_decay(optimizer, model, preset.layer_decay, layer_id, num_layers)
    lr_scheduler = build_lr_scheduler(optimizer, args, max_train_steps=10**9, num_processes=1)
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
        max_grad_norm=args.max_grad_norm,
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
